// Terminal recordings as asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/): a header
// line, then one JSON array per event: [seconds since start, "o" | "i" | "r", data]. Built from
// a session's recorded term.* events, one file per terminal channel. Pure: the export bundle
// and `gatehouse sessions replay` both use it.

export interface TerminalEvent { ts: number /* µs */; type: string; data: Record<string, unknown> }

export interface TerminalChannel { channel: number; width: number; height: number; term: string; startedAt: number; command?: string }

/** The terminal channels of a session (shells, and commands run with a pty), in order. */
export function terminalChannels(events: TerminalEvent[]): TerminalChannel[] {
  const out: TerminalChannel[] = [];
  for (const e of events) {
    if (e.type !== 'ssh.shell' && e.type !== 'ssh.exec') continue;
    const pty = e.data.pty as { cols?: number; rows?: number; term?: string } | null | undefined;
    if (e.type === 'ssh.exec' && !pty) continue;
    out.push({
      channel: Number(e.data.ch), width: pty?.cols ?? 80, height: pty?.rows ?? 24, term: pty?.term ?? 'xterm', startedAt: e.ts,
      ...(e.type === 'ssh.exec' ? { command: String(e.data.command) } : {}),
    });
  }
  return out;
}

export interface CastEvent { time: number; code: 'o' | 'i' | 'r'; data: string }

export function castEvents(events: TerminalEvent[], ch: TerminalChannel): CastEvent[] {
  const out: CastEvent[] = [];
  for (const e of events) {
    if (Number(e.data.ch) !== ch.channel) continue;
    const time = Math.max(0, (e.ts - ch.startedAt) / 1e6);
    if (e.type === 'term.out') out.push({ time, code: 'o', data: String(e.data.d) });
    else if (e.type === 'term.in') out.push({ time, code: 'i', data: String(e.data.d) });
    else if (e.type === 'term.resize') out.push({ time, code: 'r', data: `${Number(e.data.cols)}x${Number(e.data.rows)}` });
  }
  return out;
}

/** One channel as an asciicast v2 document. */
export function toAsciicast(events: TerminalEvent[], ch: TerminalChannel, title: string): string {
  const header = {
    version: 2, width: ch.width, height: ch.height, timestamp: Math.floor(ch.startedAt / 1e6),
    title: ch.command ? `${title}: ${ch.command}` : title, env: { TERM: ch.term },
  };
  const lines = [JSON.stringify(header)];
  // Microsecond timestamps, written with 6 decimals so a re-export is byte-identical.
  for (const e of castEvents(events, ch)) lines.push(`[${e.time.toFixed(6)}, ${JSON.stringify(e.code)}, ${JSON.stringify(e.data)}]`);
  return lines.join('\n') + '\n';
}

/** File name of a channel's cast in an export bundle. */
export function castFileName(ch: TerminalChannel): string {
  return `terminal-${ch.channel}.cast`;
}

/** Every terminal channel of a recording as bundle files (name → asciicast text). */
export function asciicastFiles(events: Array<{ ts: number; type: string; data: string }>, title: string): Record<string, string> {
  const parsed: TerminalEvent[] = [];
  for (const e of events) {
    if (e.type === 'ssh.shell' || e.type === 'ssh.exec' || e.type.startsWith('term.')) parsed.push({ ts: e.ts, type: e.type, data: JSON.parse(e.data) as Record<string, unknown> });
  }
  const files: Record<string, string> = {};
  for (const ch of terminalChannels(parsed)) files[castFileName(ch)] = toAsciicast(parsed, ch, title);
  return files;
}
