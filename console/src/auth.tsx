// Who is logged in, what they may do (me.permissions), and the session's end on any 401.
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';
import { api, ApiError, getToken, onUnauthenticated, setToken } from './api';

export interface Me {
  id: number | string;
  username: string;
  display_name: string | null;
  role: string;
  permissions: string[];
  kind: string;
}

interface Auth {
  me: Me | null;
  /** true until the stored token was checked against /me */
  checking: boolean;
  /** set when the session ended by itself (expired token): the login page says so */
  expired: boolean;
  /** /me failed for a reason other than 401 (server down, auth not deployed): shown on the login page */
  startupError: ApiError | null;
  login: (username: string, password: string) => Promise<Me>;
  logout: () => Promise<void>;
  can: (permission: string) => boolean;
}

const AuthContext = createContext<Auth | null>(null);

export function AuthProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<Me | null>(null);
  const [checking, setChecking] = useState<boolean>(() => !!getToken());
  const [expired, setExpired] = useState(false);
  const [startupError, setStartupError] = useState<ApiError | null>(null);

  useEffect(() => onUnauthenticated(() => {
    setToken(null);
    setMe((current) => {
      if (current) setExpired(true);
      return null;
    });
  }), []);

  useEffect(() => {
    if (!getToken()) return;
    api<Me>('/me')
      .then((found) => setMe(found))
      .catch((err: ApiError) => {
        if (err.status !== 401) setStartupError(err);
        setToken(null);
      })
      .finally(() => setChecking(false));
  }, []);

  const login = useCallback(async (username: string, password: string) => {
    const reply = await api<{ token: string; user: Me }>('/auth/login', { body: { username, password }, anonymous: true });
    setToken(reply.token);
    setExpired(false);
    setStartupError(null);
    setMe(reply.user);
    return reply.user;
  }, []);

  const logout = useCallback(async () => {
    try {
      await api('/auth/logout', { method: 'POST' });
    } catch {
      // the token is dropped locally whatever the server says
    }
    setToken(null);
    setMe(null);
  }, []);

  const value = useMemo<Auth>(() => ({
    me, checking, expired, startupError, login, logout,
    can: (permission) => !!me?.permissions?.includes(permission),
  }), [me, checking, expired, startupError, login, logout]);
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): Auth {
  const ctx = useContext(AuthContext);
  if (!ctx) throw new Error('useAuth outside AuthProvider');
  return ctx;
}
