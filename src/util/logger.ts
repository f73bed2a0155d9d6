import pino from 'pino';
import type { Logger } from 'pino';

export type { Logger };

// Paths that could carry secrets if someone ever logs a whole object. Tokens, passwords and
// result data must never reach the logs; redaction is the safety net, not the primary control.
const REDACT = [
  'token', '*.token', 'password', '*.password', 'secret', '*.secret', 'authorization',
  '*.authorization', 'headers.authorization', 'req.headers.authorization', 'params', '*.params',
  'rows', '*.rows',
];

export function createLogger(opts: { level?: string; destination?: number } = {}): Logger {
  return pino(
    { level: opts.level ?? process.env.GATEHOUSE_LOG_LEVEL ?? 'info', redact: { paths: REDACT, censor: '[redacted]' }, base: { app: 'gatehouse' } },
    pino.destination({ dest: opts.destination ?? 2, sync: false }),
  );
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
