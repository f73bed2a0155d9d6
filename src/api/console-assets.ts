// The web console's files (console/, built into console/dist by `npm install`), served at the
// API's own address so that no other process is needed. The console is a page of its own origin
// that talks only to the HTTP API; its files are public, everything they show comes through the
// API with the signed-in identity's grants. Strict headers: no framing, no inline scripts, no
// third-party anything ('wasm-unsafe-eval' lets the terminal player compile its WebAssembly
// terminal emulator; it does not allow eval of script).
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import fastifyStatic from '@fastify/static';

export const CONSOLE_DIST = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../console/dist');

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

function secure(reply: FastifyReply): FastifyReply {
  for (const [k, v] of Object.entries(SECURITY_HEADERS)) reply.header(k, v);
  return reply;
}

export async function consoleAssets(app: FastifyInstance, opts: { dist?: string } = {}): Promise<void> {
  const dist = opts.dist ?? CONSOLE_DIST;
  if (!existsSync(path.join(dist, 'index.html'))) {
    app.get('/', async (_req, reply) => secure(reply).type('text/html').send(
      '<!doctype html><meta charset="utf-8"><title>Gatehouse</title><p>The web console is not built. Run <code>npm run build:console</code> (it runs as part of <code>npm install</code>), then reload.</p>'));
    return;
  }
  await app.register(fastifyStatic, {
    root: dist, prefix: '/', wildcard: false, index: ['index.html'],
    setHeaders: (res, file) => {
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
      // Hashed asset names may be cached for ever; the page itself is always asked for again.
      res.setHeader('cache-control', file.endsWith('index.html') ? 'no-cache' : 'public, max-age=31536000, immutable');
    },
  });
}
