// 库存: stock per SKU and warehouse, the reservations behind `reserved` (the ledger names each order), receive / write off, safety stock.
import { useState } from 'react';
import { Alert, App, Button, Card, Drawer, Form, Input, InputNumber, Select, Space, Table, Tag, Typography } from 'antd';
import { CheckCircleOutlined, SyncOutlined } from '@ant-design/icons';
import { Link } from 'react-router-dom';
import { api } from '../api';
import { useApi, useCursor } from '../hooks';
import { useI18n } from '../i18n';
import { useAuth } from '../auth';
import { time } from '../format';
import { EmptyState, ErrorState, errorText } from '../components/ErrorState';
import { Pager } from '../components/Pager';
import { showApiError } from '../components/formErrors';

interface StockRow { sku: string; warehouse: string; on_hand: number; reserved: number; safety: number; available: number; updated_at: string | null }

function StockDrawer({ row, onClose, onChanged }: { row: StockRow; onClose: () => void; onChanged: () => void }) {
  const { t, label } = useI18n();
  const { can, me } = useAuth();
  const { message } = App.useApp();
  const [before, setBefore] = useState<number[]>([]);
  const ledger = useApi((signal) => api<any[]>(`/inventory/${encodeURIComponent(row.sku)}/ledger`, {
    query: { warehouse: row.warehouse, limit: 50, before_id: before[before.length - 1] }, signal,
  }), [row.sku, row.warehouse, before, row.on_hand, row.reserved]);
  const [adjust] = Form.useForm();
  const [safety] = Form.useForm();
  const describe = (e: any) => errorText(t, label, e);

  return (
    <Drawer open width={760} title={`${row.sku} · ${row.warehouse}`} onClose={onClose}>
      <Space size="large" style={{ marginBottom: 16 }}>
        <span>{t('stock.onHand')} <b>{row.on_hand}</b></span><span>{t('stock.reserved')} <b>{row.reserved}</b></span>
        <span>{t('stock.safety')} <b>{row.safety}</b></span><span>{t('stock.available')} <b>{row.available}</b></span>
      </Space>
      {can('inventory:write') && (
        <Card size="small" title={t('stock.adjust')} style={{ marginBottom: 16 }}>
          <Form form={adjust} layout="inline" onFinish={async (v) => {
            try {
              await api(`/inventory/${encodeURIComponent(row.sku)}/adjust`, { body: { warehouse: row.warehouse, delta: v.delta, reason: v.reason, actor: me?.username } });
              message.success(t('stock.adjusted'));
              adjust.resetFields();
              onChanged();
            } catch (err) {
              showApiError(err, describe, adjust, ['delta', 'reason']);
            }
          }}>
            <Form.Item name="delta" rules={[{ required: true, message: t('validation.required') }]}><InputNumber placeholder={t('stock.delta')} style={{ width: 140 }} /></Form.Item>
            <Form.Item name="reason" rules={[{ required: true, whitespace: true, message: t('validation.reasonRequired') }]}><Input placeholder={t('field.reason')} style={{ width: 220 }} /></Form.Item>
            <Button htmlType="submit" type="primary">{t('action.save')}</Button>
          </Form>
          <Form form={safety} layout="inline" style={{ marginTop: 12 }} initialValues={{ safety: row.safety }} onFinish={async (v) => {
            try {
              await api(`/inventory/${encodeURIComponent(row.sku)}/safety`, { method: 'PUT', body: { warehouse: row.warehouse, safety: v.safety, actor: me?.username } });
              message.success(t('stock.adjusted'));
              onChanged();
            } catch (err) {
              showApiError(err, describe, safety, ['safety']);
            }
          }}>
            <Form.Item name="safety" label={t('stock.safety')} rules={[{ required: true, message: t('validation.required') }]}><InputNumber min={0} /></Form.Item>
            <Button htmlType="submit">{t('action.save')}</Button>
          </Form>
        </Card>
      )}
      <Typography.Title level={5}>{t('stock.ledger')}</Typography.Title>
      {ledger.error ? <ErrorState error={ledger.error} onRetry={ledger.reload} /> : (
        <>
          <Table size="small" rowKey="id" loading={ledger.loading} dataSource={ledger.data ?? []} pagination={false}
            locale={{ emptyText: <EmptyState /> }} columns={[
              { title: t('field.time'), dataIndex: 'at', render: (v) => time(v) },
              { title: t('stock.kind'), dataIndex: 'kind', render: (v) => <Tag>{label('ledger', v)}</Tag> },
              { title: t('stock.onHandDelta'), dataIndex: 'on_hand_delta', align: 'right' },
              { title: t('stock.reservedDelta'), dataIndex: 'reserved_delta', align: 'right' },
              { title: t('field.order'), dataIndex: 'order_id', render: (v) => (v ? <Link to={`/orders/${v}`}>{v.slice(0, 10)}…</Link> : '—') },
              { title: t('field.actor'), dataIndex: 'actor' },
              { title: t('field.reason'), dataIndex: 'reason' },
            ]} />
          <Pager page={before.length + 1} hasNext={(ledger.data?.length ?? 0) === 50}
            onPrev={() => setBefore((b) => b.slice(0, -1))} onNext={() => ledger.data && setBefore((b) => [...b, ledger.data![ledger.data!.length - 1].id])} />
        </>
      )}
    </Drawer>
  );
}

export default function Inventory() {
  const { t, label } = useI18n();
  const { can } = useAuth();
  const { message } = App.useApp();
  const [filters, setFilters] = useState<{ sku?: string; warehouse?: string }>({});
  const cursor = useCursor();
  const [open, setOpen] = useState<StockRow | null>(null);
  const [check, setCheck] = useState<{ healthy: boolean; mismatches: any[] } | null>(null);
  const [syncing, setSyncing] = useState(false);
  const { data, error, loading, reload } = useApi(
    (signal) => api<{ items: StockRow[]; next_cursor: string | null }>('/inventory', { query: { ...filters, limit: 50, cursor: cursor.cursor }, signal }),
    [filters, cursor.cursor],
  );
  const current = open && data?.items.find((r) => r.sku === open.sku && r.warehouse === open.warehouse);

  return (
    <Space direction="vertical" size="middle" style={{ width: '100%' }}>
      <div style={{ display: 'flex', justifyContent: 'space-between' }}>
        <Typography.Title level={4} style={{ margin: 0 }}>{t('nav.inventory')}</Typography.Title>
        <Space>
          <Button icon={<CheckCircleOutlined />} onClick={async () => {
            try { setCheck(await api('/inventory/check')); } catch (err) { showApiError(err, (e) => errorText(t, label, e)); }
          }}>{t('stock.check')}</Button>
          {can('inventory:write') && <Button icon={<SyncOutlined />} loading={syncing} onClick={async () => {
            setSyncing(true);
            try { await api('/inventory/sync', { method: 'POST' }); message.success(t('stock.synced')); reload(); } catch (err) { showApiError(err, (e) => errorText(t, label, e)); } finally { setSyncing(false); }
          }}>{t('stock.sync')}</Button>}
        </Space>
      </div>
      {check && (check.healthy
        ? <Alert type="success" showIcon closable onClose={() => setCheck(null)} message={t('stock.healthy')} />
        : <Alert type="error" showIcon closable onClose={() => setCheck(null)} message={t('stock.unhealthy', { n: check.mismatches.length })}
            description={<pre style={{ maxHeight: 160, overflow: 'auto' }}>{JSON.stringify(check.mismatches, null, 2)}</pre>} />)}
      <Card size="small">
        <Form layout="inline" onFinish={(v) => { cursor.reset(); setFilters({ sku: v.sku?.trim() || undefined, warehouse: v.warehouse || undefined }); }}>
          <Form.Item name="sku"><Input allowClear placeholder={t('stock.skuPrefix')} style={{ width: 200 }} /></Form.Item>
          <Form.Item name="warehouse"><Select allowClear placeholder={t('field.warehouse')} style={{ width: 160 }} options={['WH-EAST', 'WH-SOUTH'].map((w) => ({ value: w, label: label('warehouse', w) }))} /></Form.Item>
          <Button type="primary" htmlType="submit">{t('action.search')}</Button>
        </Form>
      </Card>
      {error ? <ErrorState error={error} onRetry={reload} /> : (
        <Card size="small">
          <Table<StockRow> size="small" rowKey={(r) => `${r.sku}/${r.warehouse}`} loading={loading} dataSource={data?.items ?? []} pagination={false}
            locale={{ emptyText: <EmptyState /> }} data-testid="stock-table" onRow={(r) => ({ onClick: () => setOpen(r), style: { cursor: 'pointer' } })} columns={[
              { title: t('field.sku'), dataIndex: 'sku' },
              { title: t('field.warehouse'), dataIndex: 'warehouse', render: (v) => label('warehouse', v) },
              { title: t('stock.onHand'), dataIndex: 'on_hand', align: 'right' },
              { title: t('stock.reserved'), dataIndex: 'reserved', align: 'right' },
              { title: t('stock.safety'), dataIndex: 'safety', align: 'right' },
              { title: t('stock.available'), dataIndex: 'available', align: 'right', render: (v) => <Typography.Text type={v <= 0 ? 'danger' : undefined} strong>{v}</Typography.Text> },
              { title: t('field.updatedAt'), dataIndex: 'updated_at', render: (v) => time(v) },
            ]} />
          <Pager page={cursor.page} hasNext={!!data?.next_cursor} onPrev={cursor.prev} onNext={() => cursor.next(data?.next_cursor)} />
        </Card>
      )}
      {open && <StockDrawer row={current ?? open} onClose={() => setOpen(null)} onChanged={reload} />}
    </Space>
  );
}
