// 用户: users and their roles, disabling, password resets; API keys for integrations (the key is shown once).
import { useState } from 'react';
import { Alert, App, Button, Card, Form, Input, Modal, Popconfirm, Select, Space, Switch, Table, Tabs, Tag, Typography } from 'antd';
import { PlusOutlined } from '@ant-design/icons';
import { api, ApiError } from '../api';
import { useApi } from '../hooks';
import { useI18n } from '../i18n';
import { useAuth } from '../auth';
import { time } from '../format';
import { ROLES } from '../codes';
import { EmptyState, ErrorState, errorText } from '../components/ErrorState';
import { showApiError } from '../components/formErrors';

function UserForm({ user, onClose }: { user: any | null; onClose: (changed: boolean) => void }) {
  const { t, label } = useI18n();
  const { message } = App.useApp();
  const [form] = Form.useForm();
  const [busy, setBusy] = useState(false);
  const creating = user === null;
  const submit = async () => {
    const v = await form.validateFields().catch(() => null);  // the form shows what is missing
    if (!v) return;
    setBusy(true);
    try {
      if (creating) await api('/users', { body: { username: v.username, password: v.password, role: v.role, display_name: v.display_name || null } });
      else await api(`/users/${user.id}`, { method: 'PATCH', body: { display_name: v.display_name || null, role: v.role, ...(v.password ? { password: v.password } : {}) } });
      message.success(t('users.saved'));
      onClose(true);
    } catch (err) {
      showApiError(err, (e) => errorText(t, label, e), form, ['username', 'password', 'role', 'display_name']);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Modal open title={creating ? t('users.create') : t('users.edit', { name: user.username })} onCancel={() => onClose(false)} onOk={submit}
      okText={t('action.save')} cancelText={t('action.cancel')} confirmLoading={busy} destroyOnHidden>
      <Form form={form} layout="vertical" initialValues={user ?? { role: 'cs' }}>
        <Form.Item name="username" label={t('login.username')} rules={[{ required: true, message: t('validation.required') }]}>
          <Input disabled={!creating} data-testid="user-username" />
        </Form.Item>
        <Form.Item name="display_name" label={t('users.displayName')}><Input /></Form.Item>
        <Form.Item name="role" label={t('users.role')} rules={[{ required: true, message: t('validation.required') }]}>
          <Select options={ROLES.map((r) => ({ value: r, label: label('role', r) }))} />
        </Form.Item>
        <Form.Item name="password" label={creating ? t('login.password') : t('users.newPassword')} extra={!creating ? t('users.passwordHint') : undefined}
          rules={creating ? [{ required: true, message: t('validation.required') }] : []}>
          <Input.Password autoComplete="new-password" data-testid="user-password" />
        </Form.Item>
      </Form>
    </Modal>
  );
}

function UsersTab() {
  const { t, label } = useI18n();
  const { me } = useAuth();
  const { message } = App.useApp();
  const { data, error, loading, reload } = useApi((signal) => api<{ items: any[] }>('/users', { signal }), []);
  const [editing, setEditing] = useState<any | null | undefined>(undefined);
  if (error) return <ErrorState error={error} onRetry={reload} />;
  const setActive = async (u: any, active: boolean) => {
    try {
      await api(`/users/${u.id}`, { method: 'PATCH', body: { active } });
      reload();
    } catch (err) {
      message.error(err instanceof ApiError ? errorText(t, label, err) : String(err));
    }
  };
  return (
    <>
      <Button type="primary" icon={<PlusOutlined />} style={{ marginBottom: 12 }} onClick={() => setEditing(null)}>{t('users.create')}</Button>
      <Table size="small" rowKey="id" loading={loading} dataSource={data?.items ?? []} pagination={false} locale={{ emptyText: <EmptyState /> }}
        data-testid="users-table" columns={[
          { title: t('login.username'), dataIndex: 'username' },
          { title: t('users.displayName'), dataIndex: 'display_name' },
          { title: t('users.role'), dataIndex: 'role', render: (v) => <Tag color="blue">{label('role', v)}</Tag> },
          { title: t('users.active'), dataIndex: 'active', render: (v, r: any) => <Switch checked={v} disabled={r.username === me?.username} onChange={(on) => setActive(r, on)} /> },
          { title: t('users.lastLogin'), dataIndex: 'last_login_at', render: (v) => time(v) },
          { title: t('field.createdAt'), dataIndex: 'created_at', render: (v) => time(v) },
          { title: t('field.actions'), key: 'a', render: (_, r: any) => <Button size="small" onClick={() => setEditing(r)}>{t('action.edit')}</Button> },
        ]} />
      {editing !== undefined && <UserForm user={editing} onClose={(changed) => { setEditing(undefined); if (changed) reload(); }} />}
    </>
  );
}

function KeysTab() {
  const { t, label } = useI18n();
  const { message } = App.useApp();
  const { data, error, loading, reload } = useApi((signal) => api<{ items: any[] }>('/api-keys', { signal }), []);
  const [creating, setCreating] = useState(false);
  const [created, setCreated] = useState<string | null>(null);
  const [form] = Form.useForm();
  if (error) return <ErrorState error={error} onRetry={reload} />;
  const create = async () => {
    const v = await form.validateFields().catch(() => null);  // the form shows what is missing
    if (!v) return;
    try {
      const r = await api<{ key: string }>('/api-keys', { body: { name: v.name, role: v.role } });
      setCreated(r.key);
      setCreating(false);
      form.resetFields();
      reload();
    } catch (err) {
      showApiError(err, (e) => errorText(t, label, e), form, ['name', 'role']);
    }
  };
  return (
    <>
      <Button type="primary" icon={<PlusOutlined />} style={{ marginBottom: 12 }} onClick={() => setCreating(true)}>{t('keys.create')}</Button>
      {created && (
        <Alert type="success" showIcon closable onClose={() => setCreated(null)} style={{ marginBottom: 12 }} message={t('keys.createdOnce')}
          description={<Typography.Text code copyable>{created}</Typography.Text>} />
      )}
      <Table size="small" rowKey="id" loading={loading} dataSource={data?.items ?? []} pagination={false} locale={{ emptyText: <EmptyState /> }} columns={[
        { title: t('keys.name'), dataIndex: 'name' },
        { title: t('keys.prefix'), dataIndex: 'prefix', render: (v) => <code>{v}…</code> },
        { title: t('users.role'), dataIndex: 'role', render: (v) => <Tag>{label('role', v)}</Tag> },
        { title: t('keys.createdBy'), dataIndex: 'created_by' },
        { title: t('keys.lastUsed'), dataIndex: 'last_used_at', render: (v) => time(v) },
        { title: t('field.status'), dataIndex: 'revoked', render: (v, r: any) => (v ? <Tag>{t('keys.revoked')} {time(r.revoked_at)}</Tag> : <Tag color="green">{t('keys.active')}</Tag>) },
        { title: t('field.actions'), key: 'a', render: (_, r: any) => (!r.revoked && (
          <Popconfirm title={t('keys.revokeConfirm')} okText={t('action.confirm')} cancelText={t('action.cancel')} onConfirm={async () => {
            try { await api(`/api-keys/${r.id}`, { method: 'DELETE' }); message.success(t('keys.revokedOk')); reload(); } catch (err: any) { message.error(errorText(t, label, err)); }
          }}><Button size="small" danger>{t('keys.revoke')}</Button></Popconfirm>)) },
      ]} />
      <Modal open={creating} title={t('keys.create')} onCancel={() => setCreating(false)} onOk={create} okText={t('action.save')} cancelText={t('action.cancel')}>
        <Form form={form} layout="vertical" initialValues={{ role: 'viewer' }}>
          <Form.Item name="name" label={t('keys.name')} rules={[{ required: true, message: t('validation.required') }]}><Input placeholder="erp-sync" /></Form.Item>
          <Form.Item name="role" label={t('users.role')} rules={[{ required: true }]}><Select options={ROLES.map((r) => ({ value: r, label: label('role', r) }))} /></Form.Item>
        </Form>
      </Modal>
    </>
  );
}

export default function Users() {
  const { t } = useI18n();
  return (
    <Space direction="vertical" size="middle" style={{ width: '100%' }}>
      <Typography.Title level={4} style={{ margin: 0 }}>{t('nav.users')}</Typography.Title>
      <Card size="small">
        <Tabs items={[{ key: 'u', label: t('users.tab'), children: <UsersTab /> }, { key: 'k', label: t('keys.tab'), children: <KeysTab /> }]} />
      </Card>
    </Space>
  );
}
