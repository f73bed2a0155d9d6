import type { FastifyReply, FastifyRequest } from 'fastify';
import type { IdentityService } from '../identity/identity-service.ts';
import type { Identity } from '../store/types.ts';
import type { AccessService } from '../access/access-service.ts';
import { INVALID_TOKEN } from '../access/admission.ts';
import type { AuthThrottle } from '../access/auth-throttle.ts';
import { CONSOLE_COOKIE, consoleMutationAllowed, cookieValue } from './console-session.ts';

declare module 'fastify' {
  interface FastifyRequest { identity?: Identity }
}

/**
 * A bearer token, or the web console's session cookie (whose requests that change state must
 * carry its CSRF token: console-session.ts). `throttle`: failed tokens count against the client's address like any other sign-in
 * (src/access/auth-throttle.ts); a locked-out address gets 429 with Retry-After, its token unchecked.
 */
export function authenticate(identity: IdentityService, throttle?: AuthThrottle) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const header = req.headers.authorization;
    const m = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
    const fromCookie = m ? null : cookieValue(req.headers.cookie, CONSOLE_COOKIE);
    const token = m ? m[1]! : fromCookie;
    if (!token) {
      await reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'missing bearer token' });
      return;
    }
    const lockedMs = throttle?.lockedFor(req.ip) ?? 0;
    if (lockedMs > 0) {
      const seconds = Math.ceil(lockedMs / 1000);
      await reply.code(429).header('retry-after', String(seconds)).send({ error: `too many failed sign-ins from ${req.ip}: try again in ${seconds} s` });
      return;
    }
    const check = await identity.checkToken(token);
    if (!check.ok) {
      if (throttle?.failed(req.ip).lockedOut) req.log.warn({ client: req.ip }, 'too many failed sign-ins: address locked out');
      // Unknown, expired and revoked alike: the answer tells the holder of a leaked token nothing.
      await reply.code(401).header('www-authenticate', 'Bearer error="invalid_token"').send({ error: INVALID_TOKEN });
      return;
    }
    if (fromCookie !== null) {
      const refused = consoleMutationAllowed(req, fromCookie);
      if (refused) {
        await reply.code(403).send({ error: refused });
        return;
      }
      req.consoleToken = fromCookie;
    }
    req.identity = check.identity;
  };
}

/** Management needs admin on every connection (or the bootstrap flag); anything else is refused (default deny). */
export function requireAdmin(access: AccessService) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const decision = await access.check(req.identity!, 'admin', null);
    if (!decision.allowed) await reply.code(403).send({ error: `identity "${req.identity!.name}" is not an administrator: ${decision.reason}` });
  };
}

/** The token a request authenticated with: its bearer token, or the console cookie's. */
export function requestToken(req: FastifyRequest): string | null {
  const header = req.headers.authorization;
  const m = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
  return m ? m[1]! : cookieValue(req.headers.cookie, CONSOLE_COOKIE);
}
