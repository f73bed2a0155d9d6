// Thin client for the gateway's HTTP API, used by every management command. https is verified
// (system CAs, a CA file, or a pinned fingerprint: src/tls/gateway-client.ts); plain http only to loopback.
import { gatewayRequest, GatewayTrustError, type GatewayTrust } from '../tls/gateway-client.ts';

export interface ApiClientOptions { gateway: string; token?: string; trust?: GatewayTrust }

export class ApiError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export class ApiClient {
  private readonly base: string;
  private readonly token?: string;
  /** How the gateway's identity is checked; the same for a client made for another token. */
  readonly trust: GatewayTrust;

  constructor(opts: ApiClientOptions) {
    this.base = opts.gateway.replace(/\/+$/, '');
    this.token = opts.token;
    this.trust = opts.trust ?? {};
  }

  /** The gateway's URL, without trailing slashes. */
  get gateway(): string {
    return this.base;
  }

  /** `anonymous`: for the few routes that authenticate otherwise (the OIDC token exchange, sign-in). */
  async request<T>(method: string, path: string, body?: unknown, anonymous = false): Promise<T> {
    if (!this.token && !anonymous) throw new ApiError(0, 'no token: sign in with gatehouse login, set GATEHOUSE_TOKEN, or pass --token');
    let res: { status: number; text: string };
    try {
      res = await gatewayRequest(this.base, path, {
        method,
        headers: { ...(anonymous ? {} : { authorization: `Bearer ${this.token}` }), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      }, this.trust);
    } catch (err) {
      if (err instanceof GatewayTrustError) throw new ApiError(0, err.message);
      throw new ApiError(0, `cannot reach the gateway at ${this.base}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const text = res.text;
    let parsed: unknown = undefined;
    try { parsed = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
    if (res.status < 200 || res.status > 299) {
      let message = (parsed as { error?: string } | undefined)?.error ?? `HTTP ${res.status}`;
      // The gateway does not say why a token is refused (no oracle for a leaked one); say what to do.
      if (res.status === 401 && message === 'invalid token') message += ' (unknown, expired or revoked: sign in again with `gatehouse login`, or use a new token)';
      throw new ApiError(res.status, message);
    }
    return parsed as T;
  }

  get<T>(path: string): Promise<T> { return this.request<T>('GET', path); }
  post<T>(path: string, body: unknown): Promise<T> { return this.request<T>('POST', path, body); }
  put<T>(path: string, body: unknown): Promise<T> { return this.request<T>('PUT', path, body); }
  delete<T>(path: string, body?: unknown): Promise<T> { return this.request<T>('DELETE', path, body); }
}
