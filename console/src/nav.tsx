// The console's pages: path, menu label, the permission that shows them, and their code-split module.
import { lazy, type ComponentType, type LazyExoticComponent } from 'react';
import {
  AlertOutlined, ApiOutlined, AppstoreOutlined, AuditOutlined, BellOutlined, CarOutlined, DashboardOutlined,
  InboxOutlined, NodeIndexOutlined, SafetyCertificateOutlined, ShoppingCartOutlined, TeamOutlined,
} from '@ant-design/icons';
import type { MessageKey } from './i18n';

type PageModule = { default: ComponentType<any> };

/** A code-split page and its loader: main.tsx starts loading the page being opened while /me is asked. */
function page(load: () => Promise<PageModule>): { component: LazyExoticComponent<ComponentType<any>>; preload: () => Promise<PageModule> } {
  return { component: lazy(load), preload: load };
}

export interface Page {
  path: string;
  label: MessageKey;
  permission: string;
  icon: ComponentType;
  component: LazyExoticComponent<ComponentType<any>>;
  preload: () => Promise<PageModule>;
  /** sub-routes served by their own module (the order detail) */
  children?: { path: string; component: LazyExoticComponent<ComponentType<any>>; preload: () => Promise<PageModule> }[];
}

export const PAGES: Page[] = [
  { path: '/', label: 'nav.dashboard', permission: 'dashboard:read', icon: DashboardOutlined, ...page(() => import('./pages/Dashboard')) },
  {
    path: '/orders', label: 'nav.orders', permission: 'orders:read', icon: ShoppingCartOutlined, ...page(() => import('./pages/Orders')),
    children: [{ path: '/orders/:id', ...page(() => import('./pages/OrderDetail')) }],
  },
  { path: '/exceptions', label: 'nav.exceptions', permission: 'orders:read', icon: AlertOutlined, ...page(() => import('./pages/Exceptions')) },
  { path: '/inventory', label: 'nav.inventory', permission: 'inventory:read', icon: AppstoreOutlined, ...page(() => import('./pages/Inventory')) },
  { path: '/rules', label: 'nav.rules', permission: 'rules:read', icon: NodeIndexOutlined, ...page(() => import('./pages/Rules')) },
  { path: '/logistics', label: 'nav.logistics', permission: 'orders:read', icon: CarOutlined, ...page(() => import('./pages/Logistics')) },
  { path: '/channels', label: 'nav.channels', permission: 'channels:read', icon: ApiOutlined, ...page(() => import('./pages/Channels')) },
  { path: '/templates', label: 'nav.templates', permission: 'templates:read', icon: BellOutlined, ...page(() => import('./pages/Templates')) },
  { path: '/audit-log', label: 'nav.auditLog', permission: 'audit_log:read', icon: AuditOutlined, ...page(() => import('./pages/AuditLog')) },
  { path: '/users', label: 'nav.users', permission: 'users:admin', icon: TeamOutlined, ...page(() => import('./pages/Users')) },
  { path: '/quarantine', label: 'nav.quarantine', permission: 'quarantine:read', icon: InboxOutlined, ...page(() => import('./pages/Quarantine')) },
];

export const TRACK_ICON = SafetyCertificateOutlined;

/** Start fetching the chunk of the page at `pathname` (a no-op for paths that are not pages). */
export function preloadPage(pathname: string): void {
  for (const p of PAGES) {
    for (const child of p.children ?? []) {
      const pattern = new RegExp(`^${child.path.replace(/:[^/]+/g, '[^/]+')}$`);
      if (pattern.test(pathname)) {
        void child.preload();
        return;
      }
    }
    if (p.path === pathname) {
      void p.preload();
      return;
    }
  }
}
