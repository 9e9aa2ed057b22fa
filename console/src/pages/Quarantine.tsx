// 隔离区: input kept for review (signed but unreadable bodies, orders that cannot be normalised), replayed after a fix.
import { useState } from 'react';
import { App, Button, Card, Select, Space, Table, Tag, Typography } from 'antd';
import { api } from '../api';
import { useApi, useCursor } from '../hooks';
import { useI18n } from '../i18n';
import { useAuth } from '../auth';
import { time } from '../format';
import { CHANNELS } from '../codes';
import { EmptyState, ErrorState, errorText } from '../components/ErrorState';
import { Pager } from '../components/Pager';

export default function Quarantine() {
  const { t, label } = useI18n();
  const { can } = useAuth();
  const { modal, message } = App.useApp();
  const [status, setStatus] = useState<string | undefined>('open');
  const [channel, setChannel] = useState<string | undefined>();
  const cursor = useCursor<number>();
  const [busy, setBusy] = useState<number | null>(null);
  const { data, error, loading, reload } = useApi((signal) => api<{ items: any[]; next_cursor: number | null }>('/quarantine', {
    query: { status, channel, limit: 50, cursor: cursor.cursor }, signal,
  }), [status, channel, cursor.cursor]);

  const replay = async (id: number) => {
    setBusy(id);
    try {
      const r = await api<any>(`/quarantine/${id}/replay`, { method: 'POST' });
      modal.info({ title: t('quarantine.replayed', { result: label('replay', r.result) }),
        content: <pre style={{ whiteSpace: 'pre-wrap' }}>{JSON.stringify({ outcomes: r.outcomes, new_quarantine: r.new_quarantine }, null, 2)}</pre> });
      reload();
    } catch (err: any) {
      message.error(errorText(t, label, err));
    } finally {
      setBusy(null);
    }
  };

  if (error) return <ErrorState error={error} onRetry={reload} />;
  return (
    <Space direction="vertical" size="middle" style={{ width: '100%' }}>
      <Typography.Title level={4} style={{ margin: 0 }}>{t('nav.quarantine')}</Typography.Title>
      <Card size="small">
        <Space style={{ marginBottom: 12 }}>
          <Select allowClear style={{ width: 140 }} placeholder={t('field.status')} value={status} onChange={(v) => { cursor.reset(); setStatus(v); }}
            options={['open', 'replayed'].map((s) => ({ value: s, label: label('quarantineStatus', s) }))} />
          <Select allowClear style={{ width: 140 }} placeholder={t('field.channel')} value={channel} onChange={(v) => { cursor.reset(); setChannel(v); }}
            options={CHANNELS.map((c) => ({ value: c, label: label('channel', c) }))} />
        </Space>
        <Table size="small" rowKey="id" loading={loading} dataSource={data?.items ?? []} pagination={false}
          locale={{ emptyText: <EmptyState text={t('quarantine.none')} /> }} data-testid="quarantine-table" columns={[
            { title: t('field.id'), dataIndex: 'id' },
            { title: t('field.channel'), dataIndex: 'channel', render: (v) => label('channel', v) },
            { title: t('field.orderNo'), dataIndex: 'original_id', render: (v) => v ?? '—' },
            { title: t('quarantine.kind'), dataIndex: 'item_kind' },
            { title: t('quarantine.code'), dataIndex: 'code', render: (v, r: any) => <><Tag color="red">{v}</Tag>{r.field && <Typography.Text code>{r.field}</Typography.Text>}</> },
            { title: t('quarantine.message'), dataIndex: 'message' },
            { title: t('field.createdAt'), dataIndex: 'created_at', render: (v) => time(v) },
            { title: t('field.status'), dataIndex: 'status', render: (v, r: any) => <>{label('quarantineStatus', v)} {r.replayed_at && <Typography.Text type="secondary">{time(r.replayed_at)}</Typography.Text>}</> },
            { title: t('field.actions'), key: 'a', render: (_, r: any) => (can('quarantine:write') && r.status === 'open'
              ? <Button size="small" loading={busy === r.id} onClick={() => replay(r.id)}>{t('quarantine.replay')}</Button> : null) },
          ]} />
        <Pager page={cursor.page} hasNext={!!data?.next_cursor} onPrev={cursor.prev} onNext={() => cursor.next(data?.next_cursor)} />
      </Card>
    </Space>
  );
}
