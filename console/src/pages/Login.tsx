import { useState } from 'react';
import { Alert, Button, Card, Form, Input, Typography } from 'antd';
import { LockOutlined, UserOutlined } from '@ant-design/icons';
import { Navigate, useLocation, useNavigate } from 'react-router-dom';
import { useAuth } from '../auth';
import { useI18n } from '../i18n';
import { ApiError } from '../api';
import { errorText } from '../components/ErrorState';
import { LangSwitch } from '../components/LangSwitch';

export default function Login() {
  const { t, label } = useI18n();
  const { me, login, expired, startupError } = useAuth();
  const navigate = useNavigate();
  const location = useLocation();
  const [form] = Form.useForm();
  const [busy, setBusy] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);
  const from = (location.state as { from?: string } | null)?.from ?? '/';
  if (me) return <Navigate to={from} replace />;

  const submit = async ({ username, password }: { username: string; password: string }) => {
    setBusy(true);
    setNotice(null);
    try {
      await login(username.trim(), password);
      navigate(from, { replace: true });
    } catch (err) {
      if (err instanceof ApiError && err.code === 'invalid_credentials') {
        form.setFields([{ name: 'password', errors: [t('login.invalid')] }]);
      } else if (err instanceof ApiError && err.code === 'too_many_attempts') {
        setNotice(t('login.tooMany'));
      } else if (err instanceof ApiError && err.code === 'endpoint_missing') {
        setNotice(t('login.unavailable'));
      } else if (err instanceof ApiError) {
        setNotice(errorText(t, label, err));
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <div style={{ minHeight: '100vh', display: 'flex', alignItems: 'center', justifyContent: 'center', background: '#f5f7fa' }}>
      <Card style={{ width: 380 }}>
        <div style={{ display: 'flex', justifyContent: 'space-between', alignItems: 'center', marginBottom: 8 }}>
          <Typography.Title level={3} style={{ margin: 0 }}>{t('app.title')}</Typography.Title>
          <LangSwitch />
        </div>
        <Typography.Paragraph type="secondary">{t('login.subtitle')}</Typography.Paragraph>
        {expired && <Alert type="warning" showIcon message={t('login.expired')} style={{ marginBottom: 16 }} />}
        {startupError && startupError.status !== 401 && (
          <Alert type="error" showIcon message={errorText(t, label, startupError)} style={{ marginBottom: 16 }} />
        )}
        {notice && <Alert type="error" showIcon message={notice} style={{ marginBottom: 16 }} data-testid="login-notice" />}
        <Form form={form} layout="vertical" onFinish={submit} requiredMark={false}>
          <Form.Item name="username" label={t('login.username')} rules={[{ required: true, message: t('login.usernameRequired') }]}>
            <Input prefix={<UserOutlined />} autoComplete="username" autoFocus data-testid="login-username" />
          </Form.Item>
          <Form.Item name="password" label={t('login.password')} rules={[{ required: true, message: t('login.passwordRequired') }]}>
            <Input.Password prefix={<LockOutlined />} autoComplete="current-password" data-testid="login-password" />
          </Form.Item>
          <Button type="primary" htmlType="submit" block loading={busy} data-testid="login-submit">{t('login.submit')}</Button>
        </Form>
        <Typography.Paragraph style={{ marginTop: 16, marginBottom: 0 }}>
          <a href="/track">{t('nav.track')}</a>
        </Typography.Paragraph>
      </Card>
    </div>
  );
}
