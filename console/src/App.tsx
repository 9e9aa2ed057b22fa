// Routes, the antd locale that follows the language, and the login / permission gates.
import { Suspense, lazy } from 'react';
import { App as AntApp, ConfigProvider, Spin } from 'antd';
// antd/es/locale/zh_CN: the antd/locale/zh_CN path resolves to a CommonJS file whose default
// export Vite does not unwrap, and the console silently falls back to English.
import zhCN from 'antd/es/locale/zh_CN';
import enUS from 'antd/es/locale/en_US';
import { Navigate, Route, Routes, useLocation } from 'react-router-dom';
import { useI18n } from './i18n';
import { useAuth } from './auth';
import { PAGES } from './nav';
import { AppLayout } from './components/AppLayout';
import { NoPermission } from './components/ErrorState';

const Login = lazy(() => import('./pages/Login'));
const Track = lazy(() => import('./pages/Track'));
const NotFound = lazy(() => import('./pages/NotFound'));

function Loading() {
  return <div style={{ padding: 48, textAlign: 'center' }}><Spin size="large" /></div>;
}

function RequireLogin({ children }: { children: React.ReactNode }) {
  const { me, checking } = useAuth();
  const location = useLocation();
  if (checking) return <Loading />;
  if (!me) return <Navigate to="/login" replace state={{ from: location.pathname + location.search }} />;
  return <>{children}</>;
}

function Guarded({ permission, path, children }: { permission: string; path: string; children: React.ReactNode }) {
  const { can } = useAuth();
  if (can(permission)) return <>{children}</>;
  if (path === '/') {
    // a role without the dashboard (warehouse, cs …) lands on the first page it may use
    const first = PAGES.find((p) => can(p.permission));
    if (first) return <Navigate to={first.path} replace />;
  }
  return <NoPermission />;
}

export function App() {
  const { lang } = useI18n();
  return (
    <ConfigProvider locale={lang === 'zh' ? zhCN : enUS} theme={{ token: { colorPrimary: '#1f6feb', borderRadius: 6 } }}>
      <AntApp>
        <Suspense fallback={<Loading />}>
          <Routes>
            <Route path="/login" element={<Login />} />
            <Route path="/track" element={<Track />} />
            <Route element={<RequireLogin><AppLayout /></RequireLogin>}>
              {PAGES.flatMap((page) => [
                <Route key={page.path} path={page.path} element={<Guarded permission={page.permission} path={page.path}><page.component /></Guarded>} />,
                ...(page.children ?? []).map((child) => (
                  <Route key={child.path} path={child.path} element={<Guarded permission={page.permission} path={child.path}><child.component /></Guarded>} />
                )),
              ])}
              <Route path="*" element={<NotFound />} />
            </Route>
          </Routes>
        </Suspense>
      </AntApp>
    </ConfigProvider>
  );
}
