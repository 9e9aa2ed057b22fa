// 渠道与店铺: each shop's connection health, its credentials masked, and a connection test.
import { useState } from 'react';
import { Badge, Button, Card, Space, Table, Tag, Tooltip, Typography } from 'antd';
import { api } from '../api';
import { useApi } from '../hooks';
import { useI18n } from '../i18n';
import { useAuth } from '../auth';
import { time } from '../format';
import { EmptyState, ErrorState, errorText } from '../components/ErrorState';

const STATE_BADGE: Record<string, 'success' | 'warning' | 'error'> = { connected: 'success', lagging: 'warning', failing: 'error' };

export default function Channels() {
  const { t, label } = useI18n();
  const { can } = useAuth();
  const health = useApi((signal) => api<any[]>('/channels', { signal }), [], 10000);
  const shops = useApi((signal) => api<{ items: any[] }>('/shops', { signal }), []);
  const [tests, setTests] = useState<Record<string, { busy?: boolean; ok?: boolean; text?: string }>>({});

  const test = async (channel: string, shopId: string) => {
    const key = `${channel}/${shopId}`;
    setTests((s) => ({ ...s, [key]: { busy: true } }));
    try {
      const r = await api<{ ok: boolean; latency_ms: number | null; error_code?: string; message?: string }>(`/shops/${channel}/${encodeURIComponent(shopId)}/test`, { method: 'POST' });
      setTests((s) => ({ ...s, [key]: { ok: r.ok, text: r.ok ? t('channels.testOk', { ms: r.latency_ms }) : `${label('error', r.error_code)}：${r.message ?? ''}` } }));
    } catch (err: any) {
      setTests((s) => ({ ...s, [key]: { ok: false, text: errorText(t, label, err) } }));
    }
  };

  if (health.error && shops.error) return <ErrorState error={health.error} onRetry={health.reload} />;
  const byKey = new Map((shops.data?.items ?? []).map((s) => [`${s.channel}/${s.shop_id}`, s]));
  const rows = (health.data ?? []).map((h) => ({ ...h, shop: byKey.get(`${h.channel}/${h.shop_id}`) }));
  return (
    <Space direction="vertical" size="middle" style={{ width: '100%' }}>
      <Typography.Title level={4} style={{ margin: 0 }}>{t('nav.channels')}</Typography.Title>
      {shops.error && <ErrorState error={shops.error} />}
      <Card size="small">
        <Table size="small" rowKey={(r) => `${r.channel}/${r.shop_id}`} loading={health.loading && !health.data} dataSource={rows} pagination={false}
          locale={{ emptyText: <EmptyState /> }} columns={[
            { title: t('field.channel'), dataIndex: 'channel', render: (v) => label('channel', v) },
            { title: t('field.shop'), dataIndex: 'name', render: (v, r: any) => <>{v} <Typography.Text type="secondary">{r.shop_id}</Typography.Text></> },
            { title: t('channels.transport'), dataIndex: 'transport', render: (v) => label('transport', v) },
            { title: t('field.status'), dataIndex: 'state', render: (v, r: any) => <Tooltip title={r.reason}><Badge status={STATE_BADGE[v] ?? 'default'} text={label('channelState', v)} /></Tooltip> },
            { title: t('channels.lastMessage'), dataIndex: 'last_message_at', render: (v) => time(v) },
            { title: t('channels.backlog'), dataIndex: 'backlog', align: 'right' },
            { title: t('channels.appKey'), key: 'key', render: (_, r: any) => (r.shop ? <Space><code data-testid="app-key-masked">{r.shop.app_key_masked}</code>
              <Tag color={r.shop.has_secret ? 'green' : 'red'}>{r.shop.has_secret ? t('channels.secretSet') : t('channels.secretMissing')}</Tag></Space> : '—') },
            { title: t('channels.lastError'), dataIndex: 'last_error', render: (v) => (v ? <Typography.Text type="danger">{time(v.at)} {v.message}</Typography.Text> : '—') },
            { title: t('field.actions'), key: 'test', render: (_, r: any) => {
              const s = tests[`${r.channel}/${r.shop_id}`];
              return (
                <Space direction="vertical" size={0}>
                  <Button size="small" loading={s?.busy} disabled={!can('channels:write')} onClick={() => test(r.channel, r.shop_id)}>{t('channels.test')}</Button>
                  {s?.text && <Typography.Text type={s.ok ? 'success' : 'danger'}>{s.text}</Typography.Text>}
                </Space>
              );
            } },
          ]} />
      </Card>
    </Space>
  );
}
