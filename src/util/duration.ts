const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** Parses "90s", "15m", "1h", "7d" into seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*([smhdw])$/.exec(text.trim());
  if (!m) throw new Error(`invalid duration "${text}" (use e.g. 30m, 1h, 7d)`);
  const seconds = Number(m[1]) * UNITS[m[2]];
  if (seconds <= 0) throw new Error(`duration must be positive: "${text}"`);
  return seconds;
}
