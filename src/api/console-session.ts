// Browser sessions of the web console. A person signs in with a token (or, later, through the
// identity provider); the gateway then issues a token of its own for the browser — hashed at rest
// like every token, listed and revocable with the identity's tokens, never longer-lived than the
// one it was exchanged for — and keeps it in an HttpOnly, SameSite=Strict cookie (Secure under
// TLS) that page scripts cannot read. Requests authenticated by that cookie that change state must
// also carry the session's CSRF token (derived from the cookie's token, so only a page that was
// told it at sign-in has it) and, when the browser names one, an Origin of this API. Sign-ins and
// sign-outs are in the admin audit log.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ApiDeps } from './server.ts';
import { INVALID_TOKEN } from '../access/admission.ts';

export const CONSOLE_COOKIE = 'gatehouse_console';
export const CSRF_HEADER = 'x-gatehouse-csrf';
/** A console session lasts a working day at most. */
const CONSOLE_TTL_SECONDS = 8 * 3600;

/** The CSRF token of the console session whose cookie holds `sessionToken`. */
export function csrfTokenFor(sessionToken: string): string {
  return createHash('sha256').update('gatehouse console csrf\0').update(sessionToken).digest('base64url');
}

/** One cookie's value from a Cookie header (null: not there). */
export function cookieValue(header: string | undefined, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

/**
 * Whether a request authenticated by the console cookie may change state: it carries the CSRF
 * token, and its Origin (browsers send one with every POST) is this API's own.
 */
export function consoleMutationAllowed(req: FastifyRequest, sessionToken: string): string | null {
  if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return null;
  const sent = req.headers[CSRF_HEADER];
  const expected = csrfTokenFor(sessionToken);
  if (typeof sent !== 'string' || sent.length !== expected.length || !timingSafeEqual(Buffer.from(sent), Buffer.from(expected))) {
    return 'missing or wrong CSRF token (send the x-gatehouse-csrf header the console was given at sign-in)';
  }
  const origin = req.headers.origin;
  if (origin !== undefined && origin !== 'null') {
    let host: string;
    try { host = new URL(origin).host; } catch { return 'the request comes from another origin'; }
    if (host !== req.headers.host) return 'the request comes from another origin';
  } else if (origin === 'null') {
    return 'the request comes from another origin';
  }
  return null;
}

function cookie(value: string, maxAgeSeconds: number, secure: boolean): string {
  return `${CONSOLE_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${secure ? '; Secure' : ''}`;
}

const secureRequest = (req: FastifyRequest) => req.protocol === 'https';

/** Sign-in (no credentials yet: the token is in the body). */
export async function consoleSignInRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.post<{ Body: { token: string } }>('/api/v1/console/sign-in', {
    schema: { body: { type: 'object', required: ['token'], additionalProperties: false, properties: { token: { type: 'string', minLength: 1, maxLength: 512 } } } },
  }, async (req, reply) => {
    const throttle = deps.authThrottle;
    const lockedMs = throttle?.lockedFor(req.ip) ?? 0;
    if (lockedMs > 0) {
      const seconds = Math.ceil(lockedMs / 1000);
      return reply.code(429).header('retry-after', String(seconds)).send({ error: `too many failed sign-ins from ${req.ip}: try again in ${seconds} s` });
    }
    const check = await deps.identity.checkToken(req.body.token);
    if (!check.ok) {
      throttle?.failed(req.ip);
      return reply.code(401).send({ error: INVALID_TOKEN });
    }
    const remaining = Math.floor((check.token.expiresAt - Date.now()) / 1000);
    const ttl = Math.max(1, Math.min(CONSOLE_TTL_SECONDS, remaining));
    const issued = await deps.identity.issueToken(check.identity, ttl);
    await deps.audit.record('console.sign-in', {
      actor: { name: check.identity.name, kind: check.identity.kind, from: req.ip }, with: 'token', tokenId: check.token.id,
      consoleTokenId: issued.record.id, expiresAt: new Date(issued.record.expiresAt).toISOString(),
    });
    reply.header('set-cookie', cookie(issued.token, ttl, secureRequest(req)));
    return { identity: { name: check.identity.name, kind: check.identity.kind }, csrf: csrfTokenFor(issued.token), expiresAt: new Date(issued.record.expiresAt).toISOString() };
  });
}

/** Who is signed in, and sign-out (authenticated: cookie or bearer). */
export async function consoleSessionRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.get('/api/v1/console/session', async (req) => {
    const token = cookieValue(req.headers.cookie, CONSOLE_COOKIE);
    const identity = req.identity!;
    return {
      identity: { name: identity.name, kind: identity.kind }, admin: await deps.identity.access.isAdministrator(identity),
      ...(token && req.consoleToken === token ? { csrf: csrfTokenFor(token) } : {}),
    };
  });

  app.post('/api/v1/console/sign-out', async (req, reply: FastifyReply) => {
    const token = req.consoleToken;
    if (token) {
      const check = await deps.identity.checkToken(token);
      if (check.ok) await deps.store.revokeToken(check.token.id, Date.now());
      await deps.audit.record('console.sign-out', { actor: { name: req.identity!.name, kind: req.identity!.kind, from: req.ip }, ...(check.ok ? { consoleTokenId: check.token.id } : {}) });
    }
    reply.header('set-cookie', cookie('', 0, secureRequest(req)));
    return { signedOut: true };
  });
}

declare module 'fastify' {
  interface FastifyRequest { consoleToken?: string }
}
