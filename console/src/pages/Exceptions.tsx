// 异常订单: held orders by hold code with their counts; release (放行), mark resolved, cancel.
import { useState } from 'react';
import { App, Badge, Button, Card, Space, Table, Tabs, Typography } from 'antd';
import { Link } from 'react-router-dom';
import { api, ApiError } from '../api';
import { useApi, useCursor } from '../hooks';
import { useI18n } from '../i18n';
import { useAuth } from '../auth';
import { time, yuan } from '../format';
import { EmptyState, ErrorState, errorText } from '../components/ErrorState';
import { HoldTags, StatusTag } from '../components/Tags';
import { Pager } from '../components/Pager';
import { ReasonModal } from '../components/ReasonModal';
import type { OrderRow } from './Orders';

type Pending = { kind: 'release' | 'resolve' | 'cancel'; orders: OrderRow[] };

export default function Exceptions() {
  const { t, label } = useI18n();
  const { can, me } = useAuth();
  const { message, modal } = App.useApp();
  const [code, setCode] = useState<string>('');
  const cursor = useCursor();
  const [selected, setSelected] = useState<OrderRow[]>([]);
  const [pending, setPending] = useState<Pending | null>(null);
  const { data, error, loading, reload } = useApi(
    (signal) => api<{ counts: Record<string, number>; items: OrderRow[]; next_cursor: string | null }>('/exceptions', {
      query: { code: code || undefined, limit: 50, cursor: cursor.cursor }, signal,
    }),
    [code, cursor.cursor],
    15000,
  );

  const run = async (reason: string) => {
    const { kind, orders } = pending!;
    const failures: string[] = [];
    for (const o of orders) {
      try {
        await api(`/orders/${o.id}/${kind}`, { body: { reason, version: o.version, code: kind === 'cancel' ? undefined : code || undefined, actor: me?.username } });
      } catch (err) {
        failures.push(`${o.original_id}: ${err instanceof ApiError ? errorText(t, label, err) : String(err)}`);
      }
    }
    setPending(null);
    setSelected([]);
    reload();
    if (failures.length === 0) message.success(t('orders.bulkDone', { n: orders.length }));
    else modal.warning({ title: t('orders.bulkPartial', { done: orders.length - failures.length, failed: failures.length }), content: <ul>{failures.map((f) => <li key={f}>{f}</li>)}</ul> });
  };

  if (error && !data) return <ErrorState error={error} onRetry={reload} />;
  const counts = data?.counts ?? {};
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const writable = can('exceptions:write');
  const columns: any[] = [
    { title: t('field.orderNo'), dataIndex: 'original_id', render: (v: string, r: OrderRow) => <Link to={`/orders/${r.id}`}>{v}</Link> },
    { title: t('field.channel'), dataIndex: 'channel', render: (v: string) => label('channel', v) },
    { title: t('field.status'), dataIndex: 'status', render: (v: string) => <StatusTag status={v} /> },
    { title: t('field.holds'), dataIndex: 'holds', render: (v: OrderRow['holds']) => <HoldTags holds={v} /> },
    { title: t('exceptions.reason'), dataIndex: 'holds', render: (v: OrderRow['holds']) => v.map((h) => h.reason).join('；') },
    { title: t('field.paid'), dataIndex: ['amounts', 'paid'], align: 'right', render: yuan },
    { title: t('field.paidAt'), dataIndex: 'paid_at', render: (v: string) => time(v, false) },
  ];
  if (writable) {
    columns.push({
      title: t('field.actions'), key: 'actions', render: (_: unknown, r: OrderRow) => (
        <Space size="small">
          <Button size="small" type="primary" onClick={() => setPending({ kind: 'release', orders: [r] })} data-testid="exception-release">{t('action.release')}</Button>
          <Button size="small" onClick={() => setPending({ kind: 'resolve', orders: [r] })}>{t('action.resolve')}</Button>
          <Button size="small" danger onClick={() => setPending({ kind: 'cancel', orders: [r] })}>{t('action.cancelOrder')}</Button>
        </Space>
      ),
    });
  }

  return (
    <Space direction="vertical" size="middle" style={{ width: '100%' }}>
      <Typography.Title level={4} style={{ margin: 0 }}>{t('nav.exceptions')}</Typography.Title>
      <Card size="small">
        <Tabs
          activeKey={code}
          onChange={(k) => { setCode(k); cursor.reset(); setSelected([]); }}
          items={[{ key: '', label: <span>{t('exceptions.all')} <Badge count={total} overflowCount={99999} showZero color="#999" /></span> },
            ...Object.entries(counts).map(([c, n]) => ({ key: c, label: <span data-testid={`exception-tab-${c}`}>{label('hold', c)} <Badge count={n} overflowCount={99999} /></span> }))]}
        />
        {writable && (
          <Space style={{ marginBottom: 12 }}>
            <Typography.Text type="secondary">{t('orders.selected', { n: selected.length })}</Typography.Text>
            <Button disabled={!selected.length} onClick={() => setPending({ kind: 'release', orders: selected })}>{t('exceptions.bulkRelease')}</Button>
          </Space>
        )}
        <Table<OrderRow> rowKey="id" size="small" loading={loading} columns={columns} dataSource={data?.items ?? []} pagination={false}
          rowSelection={writable ? { selectedRowKeys: selected.map((o) => o.id), onChange: (_, rows) => setSelected(rows) } : undefined}
          locale={{ emptyText: <EmptyState text={t('exceptions.none')} /> }} data-testid="exceptions-table" />
        <Pager page={cursor.page} hasNext={!!data?.next_cursor} onPrev={cursor.prev} onNext={() => cursor.next(data?.next_cursor)} />
      </Card>
      <ReasonModal
        open={pending !== null}
        danger={pending?.kind === 'cancel'}
        title={pending ? `${t(`action.${pending.kind === 'cancel' ? 'cancelOrder' : pending.kind}` as any)} · ${pending.orders.length === 1 ? pending.orders[0].original_id : t('orders.nOrders', { n: pending.orders.length })}${code ? ` · ${label('hold', code)}` : ''}` : ''}
        onCancel={() => setPending(null)}
        onSubmit={run}
      />
    </Space>
  );
}
