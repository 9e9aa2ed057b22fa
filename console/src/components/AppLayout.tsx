// The frame of every signed-in page: the menu of what this role may use, language, the user.
import { Suspense } from 'react';
import { Button, Dropdown, Layout, Menu, Space, Spin, Tag, Typography } from 'antd';
import { LangSwitch } from './LangSwitch';
import { LogoutOutlined, UserOutlined } from '@ant-design/icons';
import { Link, Outlet, useLocation, useNavigate } from 'react-router-dom';
import { PAGES } from '../nav';
import { useAuth } from '../auth';
import { useI18n } from '../i18n';

export function AppLayout() {
  const { me, can, logout } = useAuth();
  const { t, label } = useI18n();
  const location = useLocation();
  const navigate = useNavigate();
  const visible = PAGES.filter((p) => can(p.permission));
  const selected = visible
    .filter((p) => (p.path === '/' ? location.pathname === '/' : location.pathname.startsWith(p.path)))
    .map((p) => p.path);

  return (
    <Layout style={{ minHeight: '100vh' }}>
      <Layout.Sider width={200} theme="light" breakpoint="lg" collapsedWidth={64} style={{ borderRight: '1px solid #f0f0f0', position: 'sticky', top: 0, height: '100vh', overflow: 'auto' }}>
        <div style={{ padding: '16px 20px', fontWeight: 600, fontSize: 16, whiteSpace: 'nowrap', overflow: 'hidden' }}>
          <Link to="/">{t('app.title')}</Link>
        </div>
        <Menu
          mode="inline"
          selectedKeys={selected}
          data-testid="main-menu"
          items={visible.map((p) => ({ key: p.path, icon: <p.icon />, label: <Link to={p.path}>{t(p.label)}</Link> }))}
        />
      </Layout.Sider>
      <Layout>
        <Layout.Header style={{ background: '#fff', padding: '0 24px', display: 'flex', alignItems: 'center', justifyContent: 'flex-end', borderBottom: '1px solid #f0f0f0' }}>
          <Space size="middle">
            <Link to="/track" target="_blank">{t('nav.track')}</Link>
            <LangSwitch />
            <Dropdown
              trigger={['click']}
              menu={{
                items: [{ key: 'logout', icon: <LogoutOutlined />, label: <span data-testid="logout">{t('action.logout')}</span> }],
                onClick: async () => {
                  await logout();
                  navigate('/login');
                },
              }}
            >
              <Button type="text" icon={<UserOutlined />} data-testid="user-menu">
                <Typography.Text>{me?.display_name || me?.username}</Typography.Text>
                <Tag style={{ marginInlineStart: 8 }}>{label('role', me?.role)}</Tag>
              </Button>
            </Dropdown>
          </Space>
        </Layout.Header>
        <Layout.Content style={{ padding: 24 }}>
          <Suspense fallback={<div style={{ padding: 48, textAlign: 'center' }}><Spin /></div>}>
            <Outlet />
          </Suspense>
        </Layout.Content>
      </Layout>
    </Layout>
  );
}
