// The console talks only to the documented HTTP API (/api/openapi.json), with the session cookie
// set at sign-in; requests that change state carry the session's CSRF token.
let csrf: string | null = null;

export class ApiError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export function setCsrf(token: string | null): void {
  csrf = token;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['x-gatehouse-csrf'] = csrf;
  const res = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  const parsed = text ? (JSON.parse(text) as unknown) : null;
  if (!res.ok) throw new ApiError(res.status, (parsed as { error?: string } | null)?.error ?? `HTTP ${res.status}`);
  return parsed as T;
}

export const get = <T>(path: string) => api<T>('GET', path);
export const post = <T>(path: string, body: unknown = {}) => api<T>('POST', path, body);

export interface Me { identity: { name: string; kind: string }; admin: boolean; csrf?: string }

export interface SessionView {
  id: string; protocol: string; identity: { id: string; name: string; kind: string; claims?: Record<string, string> | null };
  clientAddr: string; applicationName: string; connection: string; target: { host: string; port: number; database: string; user: string };
  startedAt: string; endedAt: string | null; endReason: string | null; eventCount: number; recording?: string; legalHold?: boolean;
  /** Found once the session ended: denied, held, flagged, lost (events). */
  review?: string[];
}

export interface EventView { seq: number; ts: string; tsUs: number; type: string; data: Record<string, unknown> }

export interface ApprovalView {
  id: string; status: string; requester: { name: string; kind: string; claims: Record<string, string> | null };
  session: string; connection: string; protocol: string; rule: string; policyVersion: number;
  action: Record<string, unknown>; quorum: number; decisions: Array<{ by: string; decision: string; reason: string | null; at: number }>;
  reason: string | null; createdAt: string; expiresAt: string; decidedAt: string | null;
}
