// One order on one page: lines, amounts, customer and their channels, holds, the audit's decisions and
// rule version, warehouse and WMS state, shipment and track, notifications sent, the whole event timeline.
import { useRef, useState } from 'react';
import { App, Alert, Button, Card, Col, Descriptions, Empty, List, Row, Space, Spin, Table, Tag, Timeline, Typography } from 'antd';
import { EyeOutlined } from '@ant-design/icons';
import { Link, useParams } from 'react-router-dom';
import { api, ApiError } from '../api';
import { useApi } from '../hooks';
import { useI18n } from '../i18n';
import { useAuth } from '../auth';
import { time, yuan } from '../format';
import { ErrorState, errorText } from '../components/ErrorState';
import { HoldTags, StatusTag } from '../components/Tags';
import { ReasonModal } from '../components/ReasonModal';

type Action = { kind: 'release' | 'resolve' | 'hold' | 'cancel'; code?: string };

function Section({ title, children, testId, extra }: { title: string; children: React.ReactNode; testId?: string; extra?: React.ReactNode }) {
  return <Card size="small" title={title} extra={extra} style={{ marginBottom: 16 }} data-testid={testId}>{children}</Card>;
}

/** A panel whose data may be refused to this role (403) or not served yet (404): it says so and the page lives on. */
function Optional<T>({ loaded, children }: { loaded: { data?: T; error: ApiError | null; loading: boolean }; children: (data: T) => React.ReactNode }) {
  const { t, label } = useI18n();
  if (loaded.loading && !loaded.data) return <Spin size="small" />;
  if (loaded.error) {
    if (loaded.error.status === 403) return <Typography.Text type="secondary">{t('state.forbidden.inline')}</Typography.Text>;
    if (loaded.error.code === 'endpoint_missing') return <Typography.Text type="secondary">{t('state.missing.inline')}</Typography.Text>;
    return <Typography.Text type="danger">{errorText(t, label, loaded.error)}</Typography.Text>;
  }
  return <>{loaded.data !== undefined ? children(loaded.data) : null}</>;
}

export default function OrderDetail() {
  const { id = '' } = useParams();
  const { t, label } = useI18n();
  const { can, me } = useAuth();
  const { message } = App.useApp();
  const [action, setAction] = useState<Action | null>(null);
  const [buyer, setBuyer] = useState<any>(null);
  const [buyerError, setBuyerError] = useState<string | null>(null);

  const order = useApi((signal) => api(`/orders/${id}`, { signal }), [id]);
  // the order's other sections load beside the order at once, and again only when an action moved its version
  // (keying them on the version itself would load each twice: before and after the order arrives)
  const firstSeen = useRef<{ id?: string; version?: number }>({});
  if (order.data && firstSeen.current.id !== id) firstSeen.current = { id, version: order.data.version };
  const rev = order.data && order.data.version !== firstSeen.current.version ? order.data.version : 'first';
  const events = useApi((signal) => api<any[]>(`/orders/${id}/events`, { signal }), [id, rev]);
  const tracking = useApi((signal) => api(`/orders/${id}/tracking`, { signal }), [id, rev]);
  const customerId = order.data?.customer?.id;
  const customer = useApi((signal) => (customerId ? api(`/customers/${customerId}`, { signal }) : Promise.resolve(null)), [customerId]);
  const notices = useApi((signal) => api(`/orders/${encodeURIComponent(id)}/notifications`, { signal }), [id, rev]);
  const interceptions = useApi((signal) => api('/interceptions', { query: { order_id: id, limit: 20 }, signal }), [id, rev]);

  if (order.error) return <ErrorState error={order.error} onRetry={order.reload} />;
  if (!order.data) return <Spin />;
  const o = order.data;
  const decisions = o.audit?.decisions;
  const wmsEvents = (events.data ?? []).filter((e) => e.kind.startsWith('wms') || e.actor.startsWith('wms'));
  const lastWms = wmsEvents[wmsEvents.length - 1];

  const run = async (reason: string) => {
    const a = action!;
    await api(`/orders/${o.id}/${a.kind}`, { body: { reason, code: a.code, version: o.version, actor: me?.username } });
    message.success(t('order.actionDone'));
    setAction(null);
    order.reload();
  };

  const revealBuyer = async () => {
    try {
      setBuyer(await api(`/orders/${o.id}/buyer`));
      setBuyerError(null);
    } catch (err) {
      setBuyerError(err instanceof ApiError ? errorText(t, label, err) : String(err));
    }
  };

  const canExceptions = can('exceptions:write');
  return (
    <div data-testid="order-detail">
      <Space style={{ marginBottom: 16, width: '100%', justifyContent: 'space-between' }} wrap>
        <Space>
          <Link to="/orders">{t('nav.orders')}</Link>/
          <Typography.Title level={4} style={{ margin: 0 }} copyable>{o.original_id}</Typography.Title>
          <StatusTag status={o.status} />
          <Tag>{label('channel', o.channel)} · {o.shop_id}</Tag>
          <Typography.Text type="secondary">{t('order.version', { v: o.version })}</Typography.Text>
        </Space>
        <Space>
          {canExceptions && o.status !== 'on_hold' && !['cancelled', 'closed', 'shipped', 'delivered', 'completed'].includes(o.status) && (
            <Button onClick={() => setAction({ kind: 'hold', code: 'manual' })}>{t('action.hold')}</Button>
          )}
          {canExceptions && !['cancelled', 'closed', 'shipped', 'delivered', 'completed'].includes(o.status) && (
            <Button danger onClick={() => setAction({ kind: 'cancel' })}>{t('action.cancelOrder')}</Button>
          )}
        </Space>
      </Space>
      <Row gutter={16}>
        <Col xs={24} xl={16}>
          <Section title={t('order.lines')}>
            <Table size="small" pagination={false} rowKey={(_, i) => String(i)} dataSource={o.lines} columns={[
              { title: t('field.sku'), dataIndex: 'sku', render: (v) => v ?? <Tag color="red">{t('order.unmapped')}</Tag> },
              { title: t('field.title'), dataIndex: 'title', render: (v, r: any) => <>{v} {r.gift && <Tag color="magenta">{t('order.gift')}</Tag>}</> },
              { title: t('field.qty'), dataIndex: 'qty', align: 'right' },
              { title: t('field.unitPrice'), dataIndex: 'unit_price', align: 'right', render: yuan },
              { title: t('field.paid'), dataIndex: 'paid', align: 'right', render: yuan },
              { title: t('field.refund'), dataIndex: 'refund_status', render: (v) => label('refund', v) },
            ]} />
            <Descriptions size="small" column={3} style={{ marginTop: 12 }}>
              <Descriptions.Item label={t('amount.goods')}>{yuan(o.amounts.goods)}</Descriptions.Item>
              <Descriptions.Item label={t('amount.discount')}>{yuan(o.amounts.discount)}</Descriptions.Item>
              <Descriptions.Item label={t('amount.shipping')}>{yuan(o.amounts.shipping)}</Descriptions.Item>
              <Descriptions.Item label={t('amount.discountShop')}>{yuan(o.amounts.discount_shop)}</Descriptions.Item>
              <Descriptions.Item label={t('amount.discountPlatform')}>{yuan(o.amounts.discount_platform)}</Descriptions.Item>
              <Descriptions.Item label={t('amount.paid')}><Typography.Text strong>{yuan(o.amounts.paid)}</Typography.Text></Descriptions.Item>
            </Descriptions>
          </Section>
          <Section title={t('order.holds')} testId="order-holds">
            {o.holds.length === 0 ? <Typography.Text type="secondary">{t('order.noHolds')}</Typography.Text> : (
              <List size="small" dataSource={o.holds} renderItem={(h: any) => (
                <List.Item actions={canExceptions ? [
                  <Button key="r" size="small" type="primary" onClick={() => setAction({ kind: 'release', code: h.code })} data-testid={`release-${h.code}`}>{t('action.release')}</Button>,
                  <Button key="s" size="small" onClick={() => setAction({ kind: 'resolve', code: h.code })}>{t('action.resolve')}</Button>,
                ] : []}>
                  <List.Item.Meta title={<HoldTags holds={[h]} />} description={<>{h.reason} {h.rule && <Typography.Text type="secondary">（{h.rule}）</Typography.Text>}</>} />
                </List.Item>
              )} />
            )}
            {o.audit?.released_holds?.length > 0 && (
              <Typography.Paragraph type="secondary" style={{ marginTop: 8, marginBottom: 0 }}>
                {t('order.released')}: {o.audit.released_holds.map((c: string) => label('hold', c)).join('、')}
              </Typography.Paragraph>
            )}
          </Section>
          <Section title={t('order.decisions')} testId="order-decisions">
            <Descriptions size="small" column={2}>
              <Descriptions.Item label={t('order.ruleVersion')}><Tag color="blue" data-testid="rule-version">{o.rule_version ?? t('order.notAudited')}</Tag></Descriptions.Item>
              <Descriptions.Item label={t('order.auditedAt')}>{time(o.audit?.at)}</Descriptions.Item>
              <Descriptions.Item label={t('field.warehouse')}>{o.warehouse ? label('warehouse', o.warehouse) : '—'}</Descriptions.Item>
              <Descriptions.Item label={t('field.priority')}>{o.priority}</Descriptions.Item>
              <Descriptions.Item label={t('field.carrier')}>{o.carrier ?? '—'}</Descriptions.Item>
              <Descriptions.Item label={t('order.mergeGroup')}>{o.merge_group ?? '—'}</Descriptions.Item>
              <Descriptions.Item label={t('order.tags')} span={2}>{o.tags.length ? o.tags.map((x: string) => <Tag key={x}>{label('tag', x)}</Tag>) : '—'}</Descriptions.Item>
              <Descriptions.Item label={t('order.gifts')} span={2}>
                {o.gifts.length ? o.gifts.map((g: any) => <div key={g.rule}>{g.reached ? <Tag color="green">{g.sku} ×{g.qty}</Tag> : null}{g.message ?? g.rule}</div>) : '—'}
              </Descriptions.Item>
              <Descriptions.Item label={t('order.fired')} span={2}>
                {decisions?.fired?.length ? decisions.fired.map((r: string) => <Tag key={r}>{r}</Tag>) : '—'}
              </Descriptions.Item>
            </Descriptions>
          </Section>
          <Section title={t('order.warehouse')}>
            <Descriptions size="small" column={2}>
              <Descriptions.Item label={t('field.warehouse')}>{o.warehouse ? label('warehouse', o.warehouse) : '—'}</Descriptions.Item>
              <Descriptions.Item label={t('order.wmsState')}>{lastWms ? `${lastWms.kind === 'status' ? label('status', lastWms.to) : label('event', lastWms.kind)} · ${time(lastWms.at)}` : t('order.notAtWms')}</Descriptions.Item>
            </Descriptions>
            {o.packages.length > 0 && (
              <Table size="small" pagination={false} rowKey="package_no" dataSource={o.packages} columns={[
                { title: t('order.package'), dataIndex: 'package_no' },
                { title: t('field.warehouse'), dataIndex: 'warehouse' },
                { title: t('order.packageLines'), dataIndex: 'lines', render: (ls: any[]) => ls.map((l) => `${l.sku} ×${l.qty} (${label('reservation', l.status)})`).join('；') },
              ]} />
            )}
            <Typography.Text strong style={{ display: 'block', marginTop: 12 }}>{t('order.interceptions')}</Typography.Text>
            <Optional loaded={interceptions}>{(page: any) => page.items.length === 0 ? <Typography.Text type="secondary">{t('order.noInterceptions')}</Typography.Text> : (
              <List size="small" dataSource={page.items} renderItem={(i: any) => (
                <List.Item>{label('intercept', i.kind)} · {label('outcome', i.outcome)} · {i.source} · {time(i.requested_at)}</List.Item>
              )} />
            )}</Optional>
          </Section>
          <Section title={t('order.shipment')} testId="order-tracking">
            <Optional loaded={tracking}>{(tr: any) => (
              <>
                <Descriptions size="small" column={2}>
                  <Descriptions.Item label={t('order.logistics')}>{tr.logistics_label ?? label('logistics', tr.logistics_status)}</Descriptions.Item>
                  <Descriptions.Item label={t('order.warnings')}>{tr.warnings?.length ? tr.warnings.map((w: any) => <Tag color="red" key={JSON.stringify(w)}>{typeof w === 'string' ? w : w.kind ?? JSON.stringify(w)}</Tag>) : '—'}</Descriptions.Item>
                </Descriptions>
                {tr.parcels.length === 0 ? <Empty image={Empty.PRESENTED_IMAGE_SIMPLE} description={t('order.noParcel')} /> : (
                  <Table size="small" pagination={false} rowKey="waybill_no" dataSource={tr.parcels} columns={[
                    { title: t('field.carrier'), dataIndex: 'carrier' },
                    { title: t('field.waybill'), dataIndex: 'waybill_no', render: (v) => <Typography.Text copyable>{v}</Typography.Text> },
                    { title: t('field.status'), dataIndex: 'state_label' },
                    { title: t('order.shippedAt'), dataIndex: 'shipped_at', render: (v) => time(v) },
                    { title: t('order.lastScan'), dataIndex: 'last_event_at', render: (v) => time(v) },
                  ]} />
                )}
                {tr.events.length > 0 && (
                  <Timeline style={{ marginTop: 16 }} items={tr.events.map((e: any) => ({
                    children: <><div>{e.description ?? e.status}</div><Typography.Text type="secondary">{time(e.at)} {e.location ?? ''} {e.waybill_no ?? ''}</Typography.Text></>,
                  }))} />
                )}
              </>
            )}</Optional>
          </Section>
        </Col>
        <Col xs={24} xl={8}>
          <Section title={t('order.customer')} testId="order-customer" extra={can('pii:read') && !buyer && (
            <Button size="small" icon={<EyeOutlined />} onClick={revealBuyer} data-testid="reveal-buyer">{t('order.reveal')}</Button>
          )}>
            <Descriptions size="small" column={1}>
              <Descriptions.Item label={t('field.name')}>{buyer?.name ?? o.customer.name ?? '—'}</Descriptions.Item>
              <Descriptions.Item label={t('field.phone')}><span data-testid="customer-phone">{buyer?.phone ?? o.customer.phone ?? '—'}</span></Descriptions.Item>
              <Descriptions.Item label={t('field.level')}>{o.customer.level ?? '—'}</Descriptions.Item>
              <Descriptions.Item label={t('order.channels')}>{o.customer.channels.map((c: string) => <Tag key={c}>{label('channel', c)}</Tag>)}</Descriptions.Item>
              {customer.data && <Descriptions.Item label={t('order.orderCount')}>{customer.data.order_count}</Descriptions.Item>}
              {customer.data && <Descriptions.Item label={t('order.firstSeen')}>{time(customer.data.first_seen_at)}</Descriptions.Item>}
              <Descriptions.Item label={t('field.address')}>
                {[o.address.province, o.address.city, o.address.district, buyer?.address?.detail ?? buyer?.address_detail ?? o.address.detail].filter(Boolean).join(' ')}
              </Descriptions.Item>
              <Descriptions.Item label={t('order.buyerMessage')}>{o.buyer_message ?? '—'}</Descriptions.Item>
              <Descriptions.Item label={t('order.sellerRemark')}>{o.seller_remark ?? '—'}</Descriptions.Item>
            </Descriptions>
            {buyerError && <Alert type="error" showIcon message={buyerError} />}
          </Section>
          <Section title={t('order.times')}>
            <Descriptions size="small" column={1}>
              <Descriptions.Item label={t('field.createdAt')}>{time(o.created_at)}</Descriptions.Item>
              <Descriptions.Item label={t('field.paidAt')}>{time(o.paid_at)}</Descriptions.Item>
              <Descriptions.Item label={t('field.updatedAt')}>{time(o.updated_at)}</Descriptions.Item>
            </Descriptions>
          </Section>
          <Section title={t('order.notifications')} testId="order-notifications">
            <Optional loaded={notices}>{(page: any) => page.items.length === 0 ? <Typography.Text type="secondary">{t('order.noNotifications')}</Typography.Text> : (
              <List size="small" dataSource={page.items} renderItem={(m: any) => (
                <List.Item>
                  <Space direction="vertical" size={0}>
                    <span>{m.channel} → {m.target} · {m.template} <Tag color={m.status === 'sent' ? 'green' : m.status === 'dead' ? 'red' : 'default'}>{label('outbox', m.status)}</Tag></span>
                    {m.body ? <Typography.Text>{m.body}</Typography.Text> : null}
                    <Typography.Text type="secondary">{time(m.sent_at ?? m.created_at)}{m.last_error ? ` · ${m.last_error}` : ''}</Typography.Text>
                  </Space>
                </List.Item>
              )} />
            )}</Optional>
          </Section>
          <Section title={t('order.timeline')} testId="order-timeline">
            <Optional loaded={events}>{(list: any[]) => list.length === 0 ? <Typography.Text type="secondary">{t('state.empty')}</Typography.Text> : (
              <Timeline items={list.map((e) => ({
                color: e.kind === 'hold' || e.to === 'on_hold' ? 'red' : e.to === 'cancelled' ? 'gray' : 'blue',
                children: (
                  <div data-testid="timeline-event">
                    <div><Typography.Text strong>{label('event', e.kind)}</Typography.Text>{e.from || e.to ? ` ${e.from ? label('status', e.from) : ''} → ${e.to ? label('status', e.to) : ''}` : ''}</div>
                    {e.reason && <div>{e.reason}</div>}
                    <Typography.Text type="secondary">{time(e.at)} · {e.actor}</Typography.Text>
                  </div>
                ),
              }))} />
            )}</Optional>
          </Section>
        </Col>
      </Row>
      <ReasonModal
        open={action !== null}
        danger={action?.kind === 'cancel'}
        title={action ? `${t(`action.${action.kind === 'cancel' ? 'cancelOrder' : action.kind}` as any)}${action.code ? ` · ${label('hold', action.code)}` : ''}` : ''}
        onCancel={() => setAction(null)}
        onSubmit={run}
      />
    </div>
  );
}
