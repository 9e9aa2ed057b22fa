// The one way the console talks to OrderHub: bearer token, `{code, message, field}` errors.
export const TOKEN_KEY = 'orderhub.token';

export class ApiError extends Error {
  status: number;
  code: string;
  field: string | null;
  body: any;

  constructor(status: number, code: string, message: string, field: string | null = null, body: any = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
    this.body = body;
  }
}

type Listener = (err: ApiError) => void;
const unauthenticatedListeners = new Set<Listener>();

/** The auth layer subscribes: a 401 anywhere means the session is over. */
export function onUnauthenticated(listener: Listener): () => void {
  unauthenticatedListeners.add(listener);
  return () => unauthenticatedListeners.delete(listener);
}

export function getToken(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(token: string | null): void {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

export type Query = Record<string, string | number | boolean | null | undefined>;

export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

async function toError(response: Response): Promise<ApiError> {
  let body: any = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's error page): fall through to the status line
  }
  if (body && typeof body === 'object' && typeof body.code === 'string') {
    return new ApiError(response.status, body.code, body.message ?? '', body.field ?? null, body);
  }
  // FastAPI's own 404 for a route that does not exist yet: {"detail": "Not Found"}
  const code = response.status === 404 ? 'endpoint_missing' : `http_${response.status}`;
  return new ApiError(response.status, code, body?.detail ? String(body.detail) : response.statusText, null, body);
}

export interface RequestOptions {
  method?: string;
  query?: Query;
  body?: unknown;
  /** public endpoints (the buyer tracking page) send no token and never log out */
  anonymous?: boolean;
  signal?: AbortSignal;
}

export async function api<T = any>(path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  const token = getToken();
  if (token && !options.anonymous) headers.Authorization = `Bearer ${token}`;
  let body: BodyInit | undefined;
  if (options.body instanceof FormData) body = options.body;
  else if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(options.body);
  }
  let response: Response;
  try {
    response = await fetch(withQuery(`/api/v1${path}`, options.query), {
      method: options.method ?? (body ? 'POST' : 'GET'),
      headers,
      body,
      signal: options.signal,
    });
  } catch (exc) {
    if ((exc as Error).name === 'AbortError') throw exc;
    throw new ApiError(0, 'network_error', (exc as Error).message);
  }
  if (!response.ok) {
    const err = await toError(response);
    if (err.status === 401 && !options.anonymous && !path.startsWith('/auth/login')) {
      unauthenticatedListeners.forEach((l) => l(err));
    }
    throw err;
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** A file upload with progress events (fetch has none): the import dialog shows the bar. */
export function upload<T = any>(path: string, form: FormData, onProgress: (percent: number) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/api/v1${path}`);
    const token = getToken();
    if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(Math.round((e.loaded / e.total) * 100));
    };
    xhr.onerror = () => reject(new ApiError(0, 'network_error', 'network error'));
    xhr.onload = () => {
      let body: any = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body as T);
      else {
        const err = new ApiError(xhr.status, body?.code ?? `http_${xhr.status}`, body?.message ?? xhr.statusText, body?.field ?? null, body);
        if (xhr.status === 401) unauthenticatedListeners.forEach((l) => l(err));
        reject(err);
      }
    };
    xhr.send(form);
  });
}

/** A long operation (GET /jobs/{kind}/{id}): its progress, then its report or its error. */
export interface Job<R = any> {
  id: number;
  kind: 'backtest' | 'import';
  state: 'running' | 'done' | 'failed';
  done: number;
  total: number | null;
  percent: number;
  counts: { orders: number | null; processed: number; stored: number; quarantined: number } | null;
  result: R | null;
  error: { code: string; message: string; field: string | null } | null;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

export const JOB_POLL_MS = 500;

/** Polls a job every JOB_POLL_MS until it is done (resolves with it) or failed (rejects with its
 * error as an ApiError, so the page shows the code's message like any other API error). */
export async function followJob<R = any>(job: Job<R>, onUpdate: (job: Job<R>) => void, signal?: AbortSignal): Promise<Job<R>> {
  let current = job;
  onUpdate(current);
  while (current.state === 'running') {
    await new Promise<void>((resolve, reject) => {
      const timer = window.setTimeout(resolve, JOB_POLL_MS);
      signal?.addEventListener('abort', () => {
        window.clearTimeout(timer);
        reject(new DOMException('aborted', 'AbortError'));
      }, { once: true });
    });
    current = await api<Job<R>>(`/jobs/${current.kind}/${current.id}`, { signal });
    onUpdate(current);
  }
  if (current.state === 'failed') {
    const e = current.error ?? { code: 'job_failed', message: '', field: null };
    throw new ApiError(200, e.code, e.message, e.field, current);
  }
  return current;
}
