// 通知模板: the Chinese notification templates; edited (validated by the server: 422 template_invalid under the body), previewed on an order.
import { useState } from 'react';
import { Alert, App, Button, Card, Form, Input, Modal, Space, Switch, Table, Tag, Typography } from 'antd';
import { api, ApiError } from '../api';
import { useApi } from '../hooks';
import { useI18n } from '../i18n';
import { useAuth } from '../auth';
import { time } from '../format';
import { EmptyState, ErrorState, errorText } from '../components/ErrorState';
import { showApiError } from '../components/formErrors';

function Editor({ row, onClose }: { row: any; onClose: (saved: boolean) => void }) {
  const { t, label } = useI18n();
  const { can, me } = useAuth();
  const { message } = App.useApp();
  const [form] = Form.useForm();
  const [busy, setBusy] = useState(false);
  const [orderId, setOrderId] = useState('');
  const [preview, setPreview] = useState<any>(null);
  const [previewError, setPreviewError] = useState<string | null>(null);
  const describe = (e: ApiError) => errorText(t, label, e);
  const writable = can('templates:write');

  const save = async () => {
    const v = await form.validateFields().catch(() => null);  // the form shows what is missing
    if (!v) return;
    setBusy(true);
    try {
      await api(`/notification-templates/${row.name}/${row.channel}`, { method: 'PUT', body: { subject: v.subject || null, body: v.body, enabled: v.enabled, author: me?.username } });
      message.success(t('templates.saved'));
      onClose(true);
    } catch (err) {
      // a template that does not render: Jinja's error goes under the body it came from
      if (err instanceof ApiError && err.code === 'template_invalid' && !err.field) form.setFields([{ name: 'body', errors: [describe(err)] }]);
      else showApiError(err, describe, form, ['subject', 'body', 'enabled']);
    } finally {
      setBusy(false);
    }
  };

  const runPreview = async () => {
    try {
      let id = orderId.trim();
      if (!/^[0-9a-f]{32}$/.test(id)) {
        const found = await api<{ items: { id: string }[] }>('/orders', { query: { q: id, limit: 1 } });
        if (!found.items.length) throw new ApiError(404, 'not_found', t('rules.orderNotFound'), 'order_id');
        id = found.items[0].id;
      }
      setPreview(await api(`/notification-templates/${row.name}/${row.channel}/preview`, { body: { order_id: id } }));
      setPreviewError(null);
    } catch (err) {
      setPreview(null);
      setPreviewError(err instanceof ApiError ? describe(err) : String(err));
    }
  };

  return (
    <Modal open width={720} title={`${label('template', row.name)} · ${label('notifyChannel', row.channel)}`} onCancel={() => onClose(false)}
      footer={[<Button key="c" onClick={() => onClose(false)}>{t('action.cancel')}</Button>,
        writable && <Button key="s" type="primary" loading={busy} onClick={save} data-testid="template-save">{t('action.save')}</Button>]}>
      <Form form={form} layout="vertical" initialValues={{ subject: row.subject, body: row.body, enabled: row.enabled }} disabled={!writable}>
        <Form.Item name="subject" label={t('templates.subject')}><Input /></Form.Item>
        <Form.Item name="body" label={t('templates.body')} rules={[{ required: true, message: t('validation.required') }]}>
          <Input.TextArea rows={8} style={{ fontFamily: 'monospace' }} data-testid="template-body" />
        </Form.Item>
        <Form.Item name="enabled" label={t('templates.enabled')} valuePropName="checked"><Switch /></Form.Item>
      </Form>
      <Typography.Text strong>{t('templates.preview')}</Typography.Text>
      <Space.Compact style={{ width: '100%', marginTop: 8 }}>
        <Input placeholder={t('rules.dryRunOrder')} value={orderId} onChange={(e) => setOrderId(e.target.value)} />
        <Button onClick={runPreview} disabled={!orderId.trim()}>{t('templates.preview')}</Button>
      </Space.Compact>
      {previewError && <Alert style={{ marginTop: 8 }} type="error" showIcon message={previewError} />}
      {preview && <pre style={{ marginTop: 8, whiteSpace: 'pre-wrap', background: '#fafafa', padding: 12 }}>{preview.subject ? `${preview.subject}\n\n` : ''}{preview.body ?? JSON.stringify(preview, null, 2)}</pre>}
      <Typography.Paragraph type="secondary" style={{ marginTop: 8 }}>{t('templates.note')}</Typography.Paragraph>
    </Modal>
  );
}

export default function Templates() {
  const { t, label } = useI18n();
  const { data, error, loading, reload } = useApi((signal) => api<{ items: any[] }>('/notification-templates', { signal }), []);
  const [editing, setEditing] = useState<any>(null);
  if (error) return <ErrorState error={error} onRetry={reload} />;
  return (
    <Space direction="vertical" size="middle" style={{ width: '100%' }}>
      <Typography.Title level={4} style={{ margin: 0 }}>{t('nav.templates')}</Typography.Title>
      <Card size="small">
        <Table size="small" rowKey={(r) => `${r.name}/${r.channel}`} loading={loading} dataSource={data?.items ?? []} pagination={false}
          locale={{ emptyText: <EmptyState /> }} data-testid="templates-table" onRow={(r) => ({ onClick: () => setEditing(r), style: { cursor: 'pointer' } })} columns={[
            { title: t('templates.name'), dataIndex: 'name', render: (v) => label('template', v) },
            { title: t('templates.channel'), dataIndex: 'channel', render: (v) => label('notifyChannel', v) },
            { title: t('templates.body'), dataIndex: 'body', ellipsis: true },
            { title: t('templates.enabled'), dataIndex: 'enabled', render: (v) => <Tag color={v ? 'green' : 'default'}>{v ? t('templates.on') : t('templates.off')}</Tag> },
            { title: t('rules.version'), dataIndex: 'version', render: (v) => `v${v}` },
            { title: t('field.actor'), dataIndex: 'updated_by' },
            { title: t('field.updatedAt'), dataIndex: 'updated_at', render: (v) => time(v) },
          ]} />
      </Card>
      {editing && <Editor row={editing} onClose={(saved) => { setEditing(null); if (saved) reload(); }} />}
    </Space>
  );
}
