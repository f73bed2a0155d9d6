const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** Longest token lifetime the gateway issues (also enforced by the API). */
export const MAX_TOKEN_TTL_S = 90 * 86400;

/** Parses "90s", "15m", "1h", "7d" into seconds; `maxSeconds` bounds it with a readable message. */
export function parseDuration(text: string, maxSeconds?: number): number {
  const m = /^(\d+)\s*([smhdw])$/.exec(text.trim());
  if (!m) throw new Error(`invalid duration "${text}" (use e.g. 30m, 1h, 7d)`);
  const seconds = Number(m[1]) * UNITS[m[2]];
  if (seconds <= 0) throw new Error(`duration must be positive: "${text}"`);
  if (maxSeconds !== undefined && seconds > maxSeconds) throw new Error(`duration "${text}" is longer than the maximum of ${formatDuration(maxSeconds)}`);
  return seconds;
}

export function formatDuration(seconds: number): string {
  for (const unit of ['w', 'd', 'h', 'm'] as const) {
    if (seconds % UNITS[unit] === 0 && seconds >= UNITS[unit]) return `${seconds / UNITS[unit]}${unit}`;
  }
  return `${seconds}s`;
}
