import { randomBytes, randomUUID } from 'node:crypto';

/** Sortable-enough unique id for sessions: time prefix keeps `sessions list` in start order. */
export function newSessionId(): string {
  const t = Date.now().toString(36).padStart(9, '0');
  return `s_${t}${randomBytes(6).toString('hex')}`;
}

export function newId(prefix: string): string {
  return `${prefix}_${randomUUID().replaceAll('-', '').slice(0, 20)}`;
}

/** Wall-clock time in microseconds since the epoch (monotonic within a process run). */
const originUs = Math.round(performance.timeOrigin * 1000);
export function nowUs(): number {
  return originUs + Math.round(performance.now() * 1000);
}
