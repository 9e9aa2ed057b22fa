// 物流: exception tickets (stalled parcels, carrier exceptions) and the warehouse interceptions, with their actions.
import { useState } from 'react';
import { App, Button, Card, Select, Space, Table, Tabs, Tag, Typography } from 'antd';
import { Link } from 'react-router-dom';
import { api } from '../api';
import { useApi, useCursor } from '../hooks';
import { useI18n } from '../i18n';
import { useAuth } from '../auth';
import { time } from '../format';
import { EmptyState, ErrorState, errorText } from '../components/ErrorState';
import { Pager } from '../components/Pager';
import { ReasonModal } from '../components/ReasonModal';

function Tickets() {
  const { t, label } = useI18n();
  const { can, me } = useAuth();
  const { message } = App.useApp();
  const [status, setStatus] = useState<string | undefined>('open');
  const cursor = useCursor<number>();
  const [closing, setClosing] = useState<any>(null);
  const { data, error, loading, reload } = useApi((signal) => api<{ items: any[]; next_before_id: number | null }>('/tickets', {
    query: { status, limit: 50, before_id: cursor.cursor }, signal,
  }), [status, cursor.cursor]);
  if (error) return <ErrorState error={error} onRetry={reload} />;
  return (
    <>
      <Space style={{ marginBottom: 12 }}>
        <Select allowClear style={{ width: 140 }} value={status} placeholder={t('field.status')} onChange={(v) => { cursor.reset(); setStatus(v); }}
          options={['open', 'closed'].map((s) => ({ value: s, label: label('ticket', s) }))} />
      </Space>
      <Table size="small" rowKey="id" loading={loading} dataSource={data?.items ?? []} pagination={false}
        locale={{ emptyText: <EmptyState text={t('logistics.noTickets')} /> }} data-testid="tickets-table" columns={[
          { title: t('field.id'), dataIndex: 'id' },
          { title: t('logistics.kind'), dataIndex: 'kind', render: (v) => <Tag color="red">{label('ticketKind', v)}</Tag> },
          { title: t('field.order'), dataIndex: 'order_id', render: (v) => <Link to={`/orders/${v}`}>{String(v).slice(0, 12)}…</Link> },
          { title: t('field.waybill'), dataIndex: ['detail', 'waybills'], render: (v?: string[]) => (v ?? []).join(', ') },
          { title: t('field.status'), dataIndex: 'status', render: (v) => label('ticket', v) },
          { title: t('logistics.detail'), dataIndex: ['detail', 'reason'], render: (v?: string) => v ?? '' },
          { title: t('field.createdAt'), dataIndex: 'created_at', render: (v) => time(v) },
          { title: t('field.actions'), key: 'a', render: (_, r: any) => (r.status === 'open' && can('tracking:write')
            ? <Button size="small" onClick={() => setClosing(r)}>{t('logistics.close')}</Button> : null) },
        ]} />
      <Pager page={cursor.page} hasNext={!!data?.next_before_id} onPrev={cursor.prev} onNext={() => cursor.next(data?.next_before_id)} />
      <ReasonModal open={!!closing} title={`${t('logistics.close')} #${closing?.id ?? ''}`} onCancel={() => setClosing(null)} onSubmit={async (reason) => {
        await api(`/tickets/${closing.id}/close`, { body: { reason, actor: me?.username } });
        message.success(t('logistics.closed'));
        setClosing(null);
        reload();
      }} />
    </>
  );
}

function Interceptions() {
  const { t, label } = useI18n();
  const { can, me } = useAuth();
  const { message, modal } = App.useApp();
  const [outcome, setOutcome] = useState<string | undefined>();
  const cursor = useCursor();
  const { data, error, loading, reload } = useApi((signal) => api<{ items: any[]; next_cursor: string | null }>('/interceptions', {
    query: { outcome, limit: 50, cursor: cursor.cursor }, signal,
  }), [outcome, cursor.cursor]);
  if (error) return <ErrorState error={error} onRetry={reload} />;
  const decide = (r: any, decision: 'apply' | 'dismiss') => modal.confirm({
    title: t(decision === 'apply' ? 'logistics.apply' : 'logistics.dismiss'), okText: t('action.confirm'), cancelText: t('action.cancel'),
    onOk: async () => {
      try {
        await api(`/interceptions/${r.id}/resolve`, { body: { decision, actor: me?.username } });
        message.success(t('order.actionDone'));
        reload();
      } catch (err: any) {
        message.error(errorText(t, label, err));
      }
    },
  });
  return (
    <>
      <Select allowClear style={{ width: 160, marginBottom: 12 }} value={outcome} placeholder={t('logistics.outcome')} onChange={(v) => { cursor.reset(); setOutcome(v); }}
        options={['pending', 'frozen', 'refused', 'supervisor', 'applied', 'too_late'].map((s) => ({ value: s, label: label('outcome', s) }))} />
      <Table size="small" rowKey="id" loading={loading} dataSource={data?.items ?? []} pagination={false}
        locale={{ emptyText: <EmptyState /> }} columns={[
          { title: t('field.id'), dataIndex: 'id' },
          { title: t('field.order'), dataIndex: 'order_id', render: (v) => <Link to={`/orders/${v}`}>{String(v).slice(0, 12)}…</Link> },
          { title: t('logistics.instruction'), dataIndex: 'kind', render: (v) => label('intercept', v) },
          { title: t('logistics.source'), dataIndex: 'source' },
          { title: t('logistics.outcome'), dataIndex: 'outcome', render: (v) => <Tag color={v === 'too_late' ? 'red' : v === 'supervisor' ? 'gold' : 'default'}>{label('outcome', v)}</Tag> },
          { title: t('field.reason'), dataIndex: ['detail', 'reason'] },
          { title: t('logistics.requestedAt'), dataIndex: 'requested_at', render: (v) => time(v) },
          { title: t('field.actions'), key: 'a', render: (_, r: any) => (r.outcome === 'supervisor' && can('fulfillment:write') ? (
            <Space><Button size="small" type="primary" onClick={() => decide(r, 'apply')}>{t('logistics.apply')}</Button>
              <Button size="small" onClick={() => decide(r, 'dismiss')}>{t('logistics.dismiss')}</Button></Space>) : null) },
        ]} />
      <Pager page={cursor.page} hasNext={!!data?.next_cursor} onPrev={cursor.prev} onNext={() => cursor.next(data?.next_cursor)} />
    </>
  );
}

export default function Logistics() {
  const { t } = useI18n();
  return (
    <Space direction="vertical" size="middle" style={{ width: '100%' }}>
      <Typography.Title level={4} style={{ margin: 0 }}>{t('nav.logistics')}</Typography.Title>
      <Card size="small">
        <Tabs items={[{ key: 't', label: t('logistics.tickets'), children: <Tickets /> }, { key: 'i', label: t('logistics.interceptions'), children: <Interceptions /> }]} />
      </Card>
    </Space>
  );
}
