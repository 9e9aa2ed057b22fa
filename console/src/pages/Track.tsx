// The buyer's page: order number + the phone's last 4 digits → status and the carrier's track; no other PII.
import { useState } from 'react';
import { Alert, Button, Card, Descriptions, Empty, Form, Input, Space, Tag, Timeline, Typography } from 'antd';
import { api, ApiError } from '../api';
import { useI18n } from '../i18n';
import { time } from '../format';
import { LangSwitch } from '../components/LangSwitch';

interface TrackReply {
  order_no: string;
  status: string;
  status_label: string;
  updated_at: string;
  parcels: { carrier_code: string; carrier_name: string; waybill_no: string; logistics_status: string;
    events: { at: string; status: string; description: string; location: string | null }[] }[];
}

export default function Track() {
  const { t, label } = useI18n();
  const [form] = Form.useForm();
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<TrackReply | null>(null);
  const [problem, setProblem] = useState<string | null>(null);

  const submit = async (values: { order_no: string; phone_last4: string }) => {
    setBusy(true);
    setProblem(null);
    setResult(null);
    try {
      setResult(await api<TrackReply>('/track', { query: { order_no: values.order_no.trim(), phone_last4: values.phone_last4 }, anonymous: true }));
    } catch (err) {
      const e = err as ApiError;
      if (e.code === 'not_found') setProblem(t('track.notFound'));
      else if (e.code === 'rate_limited' || e.status === 429) setProblem(t('track.rateLimited'));
      else if (e.code === 'endpoint_missing') setProblem(t('state.missing.text'));
      else setProblem(t('track.failed'));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div style={{ minHeight: '100vh', background: '#f5f7fa', padding: '48px 16px' }}>
      <div style={{ maxWidth: 640, margin: '0 auto' }}>
        <div style={{ display: 'flex', justifyContent: 'space-between', alignItems: 'center' }}>
          <Typography.Title level={3}>{t('track.title')}</Typography.Title>
          <LangSwitch />
        </div>
        <Card>
          <Form form={form} layout="inline" onFinish={submit} style={{ rowGap: 12 }}>
            <Form.Item name="order_no" rules={[{ required: true, whitespace: true, message: t('track.orderNoRequired') }]}>
              <Input placeholder={t('track.orderNo')} style={{ width: 240 }} data-testid="track-order-no" />
            </Form.Item>
            <Form.Item name="phone_last4" rules={[{ required: true, pattern: /^\d{4}$/, message: t('track.last4Invalid') }]}>
              <Input placeholder={t('track.last4')} maxLength={4} style={{ width: 140 }} data-testid="track-last4" />
            </Form.Item>
            <Button type="primary" htmlType="submit" loading={busy} data-testid="track-submit">{t('track.submit')}</Button>
          </Form>
          <Typography.Paragraph type="secondary" style={{ marginTop: 12, marginBottom: 0 }}>{t('track.hint')}</Typography.Paragraph>
        </Card>
        {problem && <Alert style={{ marginTop: 16 }} type="warning" showIcon message={problem} data-testid="track-problem" />}
        {result && (
          <Card style={{ marginTop: 16 }} data-testid="track-result">
            <Descriptions column={1} size="small">
              <Descriptions.Item label={t('track.orderNo')}>{result.order_no}</Descriptions.Item>
              <Descriptions.Item label={t('field.status')}><Tag color="blue">{result.status_label || label('status', result.status)}</Tag></Descriptions.Item>
              <Descriptions.Item label={t('field.updatedAt')}>{time(result.updated_at)}</Descriptions.Item>
            </Descriptions>
            {result.parcels.length === 0 && <Empty description={t('track.noParcel')} />}
            {result.parcels.map((p) => (
              <Card key={p.waybill_no} type="inner" size="small" style={{ marginTop: 12 }}
                title={<Space>{p.carrier_name || p.carrier_code}<Typography.Text copyable>{p.waybill_no}</Typography.Text></Space>}
                extra={<Tag>{label('logistics', p.logistics_status)}</Tag>}>
                {p.events.length === 0 ? <Empty image={Empty.PRESENTED_IMAGE_SIMPLE} description={t('track.noEvents')} /> : (
                  <Timeline items={p.events.map((e) => ({
                    children: <><div>{e.description}</div><Typography.Text type="secondary">{time(e.at)} {e.location ?? ''}</Typography.Text></>,
                  }))} />
                )}
              </Card>
            ))}
          </Card>
        )}
      </div>
    </div>
  );
}
