// 订单: one search box (order no, internal id, phone last 4, waybill no), filters, bulk release / cancel, file import.
import { useMemo, useState } from 'react';
import { App, Button, Card, DatePicker, Form, Input, Select, Space, Table, Typography } from 'antd';
import { ImportOutlined, SearchOutlined } from '@ant-design/icons';
import { Link, useSearchParams } from 'react-router-dom';
import dayjs from 'dayjs';
import { api, ApiError } from '../api';
import { useApi, useCursor } from '../hooks';
import { useI18n } from '../i18n';
import { useAuth } from '../auth';
import { dayBound, time, yuan } from '../format';
import { CHANNELS, HOLD_CODES, STATUSES } from '../codes';
import { ErrorState, EmptyState, errorText } from '../components/ErrorState';
import { HoldTags, StatusTag } from '../components/Tags';
import { Pager } from '../components/Pager';
import { ReasonModal } from '../components/ReasonModal';
import { ImportModal } from '../components/ImportModal';

export interface OrderRow {
  id: string; channel: string; shop_id: string; original_id: string; status: string; created_at: string; paid_at: string | null;
  amounts: { paid: number }; customer: { name: string | null; phone: string | null }; holds: { code: string; reason: string }[];
  warehouse: string | null; version: number; shipment: { waybill_no: string } | null;
}

const SEARCH_KINDS = ['auto', 'order', 'phone', 'waybill'] as const;

/** What the search box means: four digits are a phone's tail, anything else an order number, id or waybill. */
export function searchQuery(kind: string, text: string): Record<string, string> {
  const value = text.trim();
  if (!value) return {};
  if (kind === 'phone' || (kind === 'auto' && /^\d{4}$/.test(value))) return { phone_last4: value };
  if (kind === 'waybill') return { waybill_no: value };
  return { q: value };
}

export default function Orders() {
  const { t, label } = useI18n();
  const { can, me } = useAuth();
  const { message, modal } = App.useApp();
  const [params, setParams] = useSearchParams();
  const [form] = Form.useForm();
  const cursor = useCursor();
  const [selected, setSelected] = useState<OrderRow[]>([]);
  const [bulk, setBulk] = useState<'release' | 'cancel' | null>(null);
  const [importing, setImporting] = useState(false);

  const filters = useMemo(() => Object.fromEntries(params.entries()), [params]);
  const query = useMemo(() => {
    const q: Record<string, string | number> = { ...searchQuery(filters.kind ?? 'auto', filters.text ?? ''), limit: 50 };
    for (const k of ['channel', 'status', 'hold']) if (filters[k]) q[k] = filters[k];
    if (filters.from) q.created_from = dayBound(dayjs(filters.from), false);
    if (filters.to) q.created_to = dayBound(dayjs(filters.to), true);
    return q;
  }, [filters]);
  const { data, error, loading, reload } = useApi(
    (signal) => api<{ items: OrderRow[]; next_cursor: string | null }>('/orders', { query: { ...query, cursor: cursor.cursor }, signal }),
    [query, cursor.cursor],
  );

  const apply = (values: any) => {
    const next: Record<string, string> = {};
    if (values.text?.trim()) next.text = values.text.trim();
    if (values.kind && values.kind !== 'auto') next.kind = values.kind;
    for (const k of ['channel', 'status', 'hold']) if (values[k]) next[k] = values[k];
    if (values.range?.[0]) next.from = values.range[0].format('YYYY-MM-DD');
    if (values.range?.[1]) next.to = values.range[1].format('YYYY-MM-DD');
    cursor.reset();
    setSelected([]);
    setParams(next);
  };

  const runBulk = async (action: 'release' | 'cancel', reason: string) => {
    const targets = action === 'release' ? selected.filter((o) => o.status === 'on_hold') : selected;
    const failures: string[] = [];
    for (const order of targets) {
      try {
        await api(`/orders/${order.id}/${action}`, { body: { reason, version: order.version, actor: me?.username } });
      } catch (err) {
        failures.push(`${order.original_id}: ${err instanceof ApiError ? errorText(t, label, err) : String(err)}`);
      }
    }
    const done = targets.length - failures.length;
    setBulk(null);
    setSelected([]);
    reload();
    if (failures.length === 0) message.success(t('orders.bulkDone', { n: done }));
    else modal.warning({ title: t('orders.bulkPartial', { done, failed: failures.length }), content: <ul>{failures.map((f) => <li key={f}>{f}</li>)}</ul> });
  };

  const bulkAllowed = can('exceptions:write');
  const columns = [
    { title: t('field.orderNo'), dataIndex: 'original_id', render: (v: string, r: OrderRow) => <Link to={`/orders/${r.id}`} data-testid="order-link">{v}</Link> },
    { title: t('field.channel'), dataIndex: 'channel', render: (v: string) => label('channel', v) },
    { title: t('field.shop'), dataIndex: 'shop_id' },
    { title: t('field.status'), dataIndex: 'status', render: (v: string) => <StatusTag status={v} /> },
    { title: t('field.paid'), dataIndex: ['amounts', 'paid'], align: 'right' as const, render: (v: number) => yuan(v) },
    { title: t('field.customer'), render: (_: unknown, r: OrderRow) => `${r.customer.name ?? ''} ${r.customer.phone ?? ''}` },
    { title: t('field.holds'), dataIndex: 'holds', render: (v: OrderRow['holds']) => <HoldTags holds={v} /> },
    { title: t('field.warehouse'), dataIndex: 'warehouse', render: (v: string | null) => v ?? '—' },
    { title: t('field.createdAt'), dataIndex: 'created_at', render: (v: string) => time(v, false) },
  ];

  return (
    <Space direction="vertical" size="middle" style={{ width: '100%' }}>
      <div style={{ display: 'flex', justifyContent: 'space-between' }}>
        <Typography.Title level={4} style={{ margin: 0 }}>{t('nav.orders')}</Typography.Title>
        {can('imports:write') && <Button icon={<ImportOutlined />} onClick={() => setImporting(true)}>{t('orders.import')}</Button>}
      </div>
      <Card size="small">
        <Form form={form} layout="inline" onFinish={apply} style={{ rowGap: 8 }}
          initialValues={{ kind: filters.kind ?? 'auto', text: filters.text, channel: filters.channel, status: filters.status, hold: filters.hold,
            range: filters.from ? [dayjs(filters.from), dayjs(filters.to ?? filters.from)] : undefined }}>
          <Form.Item name="kind">
            <Select style={{ width: 130 }} options={SEARCH_KINDS.map((k) => ({ value: k, label: t(`orders.search.${k}` as any) }))} />
          </Form.Item>
          <Form.Item name="text">
            <Input allowClear placeholder={t('orders.searchPlaceholder')} style={{ width: 300 }} data-testid="order-search" />
          </Form.Item>
          <Form.Item name="channel">
            <Select allowClear placeholder={t('field.channel')} style={{ width: 130 }} options={CHANNELS.map((c) => ({ value: c, label: label('channel', c) }))} />
          </Form.Item>
          <Form.Item name="status">
            <Select allowClear placeholder={t('field.status')} style={{ width: 120 }} options={STATUSES.map((s) => ({ value: s, label: label('status', s) }))} />
          </Form.Item>
          <Form.Item name="hold">
            <Select allowClear placeholder={t('field.holds')} style={{ width: 140 }} options={HOLD_CODES.map((s) => ({ value: s, label: label('hold', s) }))} />
          </Form.Item>
          <Form.Item name="range"><DatePicker.RangePicker /></Form.Item>
          <Button type="primary" htmlType="submit" icon={<SearchOutlined />} data-testid="order-search-submit">{t('action.search')}</Button>
        </Form>
      </Card>
      {error ? <ErrorState error={error} onRetry={reload} /> : (
        <Card size="small">
          {bulkAllowed && (
            <Space style={{ marginBottom: 12 }}>
              <Typography.Text type="secondary">{t('orders.selected', { n: selected.length })}</Typography.Text>
              {can('exceptions:write') && <Button disabled={!selected.some((o) => o.status === 'on_hold')} onClick={() => setBulk('release')}>{t('action.release')}</Button>}
              {can('exceptions:write') && <Button danger disabled={selected.length === 0} onClick={() => setBulk('cancel')}>{t('action.cancelOrder')}</Button>}
            </Space>
          )}
          <Table<OrderRow>
            rowKey="id" size="small" loading={loading} columns={columns} dataSource={data?.items ?? []} pagination={false}
            locale={{ emptyText: <EmptyState text={t('orders.none')} /> }}
            rowSelection={bulkAllowed ? { selectedRowKeys: selected.map((o) => o.id), onChange: (_, rows) => setSelected(rows) } : undefined}
            data-testid="orders-table"
          />
          <Pager page={cursor.page} hasNext={!!data?.next_cursor} onPrev={cursor.prev} onNext={() => cursor.next(data?.next_cursor)} />
        </Card>
      )}
      <ReasonModal
        open={bulk !== null}
        danger={bulk === 'cancel'}
        title={bulk === 'cancel' ? t('orders.bulkCancel', { n: selected.length }) : t('orders.bulkRelease', { n: selected.filter((o) => o.status === 'on_hold').length })}
        onCancel={() => setBulk(null)}
        onSubmit={(reason) => runBulk(bulk!, reason)}
      />
      {importing && <ImportModal onClose={() => { setImporting(false); reload(); }} />}
    </Space>
  );
}
