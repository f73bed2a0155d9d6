// Rendering of API results for people: tables, the session timeline, and the replay.
// Everything printed for a person goes through visible(): recorded text is chosen by clients
// (SQL, commands, paths, application_name, claims, messages that echo them) and must not drive
// the reader's terminal. JSON output is left exact.
import { GAP_EVENT_TYPE } from '../integrity/gap-marker.ts';

/**
 * Control and format characters a terminal would act on or that hide text: C0 (ESC, CR, LF, TAB…),
 * DEL, C1 (U+0080–U+009F, U+009B is a CSI), Unicode format characters (bidi embeddings, overrides
 * and isolates U+202A–U+202E, U+2066–U+2069, zero-width characters, BOM, tag characters), line and
 * paragraph separators, and lone surrogates.
 */
const HIDDEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeOne(ch: string): string {
  const named = NAMED[ch];
  if (named) return named;
  const code = ch.codePointAt(0)!;
  if (code < 0x80) return `\\x${code.toString(16).padStart(2, '0')}`;
  return code > 0xffff ? `\\u{${code.toString(16)}}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** `text` with every control and format character shown as an escape (`\x1b`, `\n`, `\u202e`); idempotent. */
export function visible(text: string): string {
  HIDDEN.lastIndex = 0;
  return HIDDEN.test(text) ? text.replace(HIDDEN, escapeOne) : text;
}

/** Lines for a person: each escaped, so no recorded text can add, erase or overwrite one. */
export function lines(out: string[]): string {
  return out.map(visible).join('\n');
}

export function table(headers: string[], rows: Array<Array<string | number | null>>): string {
  const cells = rows.map((r) => r.map((c) => (c === null ? '' : visible(String(c)))));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]?.length ?? 0)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(headers), ...cells.map(line)].join('\n');
}

export interface SessionView {
  id: string; protocol: string; identity: { id: string; name: string; kind: string; claims?: Record<string, string> | null }; authMethod?: string | null;
  clientAddr: string; applicationName: string;
  connection: string; target: { host: string; port: number; database: string; user: string };
  startedAt: string; endedAt: string | null; endReason: string | null; eventCount: number; recording?: string;
}

export interface EventView { seq: number; ts: string; tsUs: number; type: string; data: Record<string, unknown> }

interface ErrorData { severity?: string; code?: string; message?: string; detail?: string; hint?: string }

export function sessionsTable(sessions: SessionView[]): string {
  return table(['ID', 'STARTED', 'IDENTITY', 'KIND', 'CONNECTION', 'APPLICATION', 'EVENTS', 'END'], sessions.map((s) => [
    s.id, s.startedAt, s.identity.name, s.identity.kind, s.connection, s.applicationName, s.eventCount, s.endReason ?? 'open',
  ]));
}

function ms(us: number): string {
  return us >= 1_000_000 ? `${(us / 1_000_000).toFixed(2)} s` : `${(us / 1000).toFixed(us < 10_000 ? 2 : 1)} ms`;
}

/** Escaped (a newline shows as \n, never as a line break or a space) and cut to `max` characters. */
function oneLine(text: string, max = 200): string {
  const shown = visible(text);
  return shown.length > max ? shown.slice(0, max - 1) + '…' : shown;
}

function outcome(r: Record<string, unknown>): string {
  const parts: string[] = [];
  if (r.skipped) return 'not executed (an earlier error in the pipeline)';
  if (r.incomplete) parts.push(`incomplete: ${String(r.incomplete)}`);
  const err = r.error as ErrorData | undefined;
  if (err) parts.push(`${err.severity ?? 'ERROR'} ${err.code ?? ''} ${err.message ?? ''}`.replace(/ +/g, ' '));
  else if (r.tag !== undefined) parts.push(String(r.tag) || '(empty query)');
  else if (Array.isArray(r.tags)) parts.push((r.tags as string[]).join(', '));
  if (typeof r.rowsReturned === 'number') parts.push(`${r.rowsReturned} row${r.rowsReturned === 1 ? '' : 's'} returned`);
  if (typeof r.copyBytes === 'number') parts.push(`${r.copyBytes} bytes copied`);
  if (r.suspended) parts.push('portal suspended');
  if (typeof r.durationUs === 'number') parts.push(ms(r.durationUs));
  return parts.join(' · ');
}

/** `sessions show`: who, what, and every statement with its outcome and timing. */
export function timeline(session: SessionView, events: EventView[]): string {
  const out: string[] = [];
  out.push(`session     ${session.id} (${session.protocol})`);
  out.push(`identity    ${session.identity.name} (${session.identity.kind})`);
  if (session.authMethod) out.push(`auth        ${session.authMethod}`);
  const claims = Object.entries(session.identity.claims ?? {}).sort(([a], [b]) => a.localeCompare(b));
  claims.forEach(([name, value], i) => out.push(`${i === 0 ? 'claims      ' : ' '.repeat(12)}${name}=${value}`));
  // Why the session was let in (or not): the access decision recorded at its start.
  const start = events.find((e) => e.type === 'session.start')?.data.access as { reason?: string } | undefined;
  const denied = events.find((e) => e.type === 'access.denied')?.data.access as { reason?: string } | undefined;
  if (start?.reason) out.push(`access      ${start.reason}`);
  else if (denied?.reason) out.push(`access      ${denied.reason}`);
  out.push(`client      ${session.clientAddr}${session.applicationName ? `  application_name=${session.applicationName}` : ''}`);
  out.push(`connection  ${session.connection} → ${session.target.user ? `${session.target.user}@` : ''}${session.target.host}:${session.target.port}${session.target.database ? `${session.protocol === 'git-http' ? '' : '/'}${session.target.database}` : ''}`);
  if (session.recording === 'best-effort') out.push('recording   best-effort (statements were not held until recorded)');
  out.push(`started     ${session.startedAt}`);
  out.push(`ended       ${session.endedAt ?? '(open)'}${session.endReason ? ` — ${session.endReason}` : ''}`);
  out.push('');
  const t0 = events[0]?.tsUs ?? 0;
  const results = new Map<number, Record<string, unknown>>();
  for (const e of events) if (e.type === 'result') results.set(Number(e.data.ref), e.data);
  for (const e of events) {
    const at = `+${((e.tsUs - t0) / 1_000_000).toFixed(3)}s`.padStart(10);
    const d = e.data;
    switch (e.type) {
      case 'query':
      case 'execute': {
        const params = Array.isArray(d.params) && d.params.length > 0 ? `  params=${JSON.stringify(d.params)}` : '';
        const unknown = d.unverified ? `(unverified ${d.statement ? `statement ${String(d.statement)}` : `portal ${String(d.portal ?? '')}`})`
          : d.cursor === undefined && d.portal && !d.statement ? `(unknown portal ${String(d.portal)})` : `(unknown prepared statement ${String(d.statement ?? '')})`;
        out.push(`${at}  #${e.seq} ${e.type.padEnd(8)} ${oneLine(String(d.text ?? unknown))}${params}`);
        if (d.policy) out.push(`${' '.repeat(12)}${policyMark(d)}`);
        if (d.unverified) out.push(`${' '.repeat(12)}  ! ${oneLine(String(d.unverified))}; last known text: ${oneLine(String(d.lastKnownText ?? '(none)'))}`);
        if (d.textTruncated) out.push(truncationNote(d));
        const r = results.get(e.seq);
        if (d.provisional) out.push(`${' '.repeat(12)}  ! recorded before the server showed which statement would run (see the outcome)`);
        if (d.encoding) out.push(`${' '.repeat(12)}  ! client encoding ${String(d.encoding)}: original bytes kept (--json: raw)`);
        out.push(`${' '.repeat(12)}  → ${r ? outcome(r) : 'no outcome recorded'}`);
        const ran = r?.ran as { statement?: string; text?: string | null } | undefined;
        if (ran) out.push(`${' '.repeat(12)}  ! the server ran ${ran.statement ? `statement ${ran.statement}: ` : ''}${oneLine(String(ran.text ?? '(unknown text)'))}`);
        break;
      }
      case 'parse': {
        // An unnamed statement shows in the execute that runs it; only a failed or skipped one here.
        const r = results.get(e.seq);
        if (!d.name && !r) break;
        out.push(`${at}  #${e.seq} prepare  ${d.name ? `${String(d.name)}: ` : ''}${oneLine(String(d.text ?? ''))}${r ? `  → ${outcome(r)}` : ''}`);
        if (d.policy) out.push(`${' '.repeat(12)}${policyMark(d)}`);
        if (d.textTruncated) out.push(truncationNote(d));
        break;
      }
      case 'function_call': {
        const args = Array.isArray(d.args) && d.args.length > 0 ? `  args=${JSON.stringify(d.args)}` : '';
        out.push(`${at}  #${e.seq} call     ${d.function ? String(d.function) : `function oid ${String(d.oid)}`}${args}`);
        const r = results.get(e.seq);
        out.push(`${' '.repeat(12)}  → ${r ? outcome(r) : 'no outcome recorded'}`);
        break;
      }
      case 'tracking':
        out.push(`${at}  #${e.seq} warning  ${String(d.warning ?? '')}`);
        break;
      case 'notice':
      case 'error':
        out.push(`${at}  #${e.seq} ${e.type.padEnd(8)} ${String(d.severity ?? '')} ${String(d.code ?? '')} ${String(d.message ?? '')}`);
        break;
      case 'notification':
        out.push(`${at}  #${e.seq} notify   channel=${String(d.channel)} payload=${oneLine(String(d.payload), 80)}`);
        break;
      case 'parameter':
        out.push(`${at}  #${e.seq} param    ${String(d.name)}=${String(d.value)}`);
        break;
      case 'cancel':
        out.push(`${at}  #${e.seq} cancel   cancel request forwarded to the target backend`);
        break;
      case 'access.denied':
        out.push(`${at}  #${e.seq} denied   ${String(d.code)} ${String(d.message)}${d.detail ? ` (${String(d.detail)})` : ''}`);
        break;
      case 'policy.hold':
        out.push(`${at}  #${e.seq} HOLD     approval request ${oneLine(String(d.request))} (rule ${oneLine(String(d.rule ?? ''))}), refused if not decided by ${oneLine(String(d.expiresAt ?? ''))}`);
        break;
      case 'policy.decision': {
        const how = d.kind === 'approved' ? `approved by ${(Array.isArray(d.by) ? d.by : [d.by]).map((x) => oneLine(String(x))).join(', ')}`
          : d.kind === 'denied' ? `DENIED by ${oneLine(String(d.by))}: ${oneLine(String(d.reason ?? ''))}`
          : d.kind === 'expired' ? 'EXPIRED: not decided in time' : `${oneLine(String(d.kind))}: ${oneLine(String(d.reason ?? ''))}`;
        out.push(`${at}  #${e.seq} DECISION request ${oneLine(String(d.request))}: ${how}`);
        break;
      }
      case GAP_EVENT_TYPE:
        out.push(`${at}  #${e.seq} ${describeGap(d)}`);
        break;
      case 'session.start':
      case 'session.end':
      case 'result':
      case 'term.out':
        break;
      case 'file.open':
      case 'file.request':
        // Their outcome is the file.op line; shown here only when the policy flagged them.
        if (d.policy) out.push(`${at}  #${e.seq} request  [ch ${String(d.ch ?? '-')}] ${String(d.via)} ${String(d.op ?? `open for ${String(d.mode)}`)} ${String(d.path ?? '')}${d.to ? ` → ${String(d.to)}` : ''}${policyMark(d)}`);
        break;
      default: {
        const line = describeSshOrGit(e);
        out.push(`${at}  #${e.seq} ${line ?? e.type}`);
      }
    }
  }
  return lines(out);
}

/** A statement recorded as its first bytes: how long it was and the hash that names it exactly. */
function truncationNote(d: Record<string, unknown>): string {
  return `${' '.repeat(12)}  ! text truncated: the first ${Buffer.byteLength(String(d.text ?? ''))} of ${Number(d.textBytes)} bytes recorded; sha256 ${oneLine(String(d.textSha256))}`;
}

/** `sessions replay`: the conversation as the client saw it, psql style, from the recorded samples. */
export function replay(session: SessionView, events: EventView[]): string {
  const out: string[] = [`-- session ${session.id}: ${session.identity.name} on ${session.connection} (${session.startedAt})`];
  const results = new Map<number, Record<string, unknown>>();
  for (const e of events) if (e.type === 'result') results.set(Number(e.data.ref), e.data);
  for (const e of events) {
    const d = e.data;
    if (e.type === 'query' || e.type === 'execute') {
      const text = String(d.text ?? '');
      out.push(`${session.target.database}=> ${text}${/;\s*$/.test(text) ? '' : ';'}`);
      if (d.textTruncated) out.push(`-- (text truncated: ${Number(d.textBytes)} bytes in all, sha256 ${String(d.textSha256)})`);
      if (Array.isArray(d.params) && d.params.length > 0) out.push(`-- parameters: ${JSON.stringify(d.params)}`);
      const r = results.get(e.seq);
      if (!r) { out.push('-- (no outcome recorded)'); continue; }
      if (r.skipped) { out.push('-- (not executed: an earlier error in the pipeline)'); continue; }
      const err = r.error as ErrorData | undefined;
      const sample = r.sample as Array<Array<string | null>> | undefined;
      const columns = r.columns as string[] | undefined;
      if (columns && sample) {
        out.push(...resultTable(columns, sample));
        const n = Number(r.rowsReturned ?? sample.length);
        out.push(`(${n} row${n === 1 ? '' : 's'})${r.sampleTruncated ? ` -- ${sample.length} recorded` : ''}`);
      } else if (columns) {
        out.push(...resultTable(columns, []));
        out.push('(0 rows)');
      } else if (sample) {
        for (const row of sample) out.push(String(row[0] ?? '').replace(/\n$/, ''));
      }
      if (err) {
        out.push(`${err.severity ?? 'ERROR'}:  ${err.message ?? ''}`);
        if (err.detail) out.push(`DETAIL:  ${err.detail}`);
        if (err.hint) out.push(`HINT:  ${err.hint}`);
      } else if (!columns && r.tag !== undefined) out.push(String(r.tag));
      else if (!columns && Array.isArray(r.tags)) for (const t of r.tags as string[]) out.push(t);
      if (r.incomplete) out.push(`-- (incomplete: ${String(r.incomplete)})`);
      out.push('');
    } else if (e.type === 'notice') {
      out.push(`${String(d.severity ?? 'NOTICE')}:  ${String(d.message ?? '')}`);
    } else if (e.type === 'notification') {
      out.push(`Asynchronous notification "${String(d.channel)}" with payload "${String(d.payload)}" received from server process with PID ${String(d.pid)}.`);
    } else if (e.type === 'error') {
      out.push(`${String(d.severity ?? 'ERROR')}:  ${String(d.message ?? '')}`);
    } else if (e.type === 'access.denied') {
      out.push(`FATAL:  ${String(d.message)}`);
    } else if (e.type === 'session.end') {
      out.push(`-- session ended: ${String(d.reason)}`);
    }
  }
  return lines(out);
}

function resultTable(columns: string[], rows: Array<Array<string | null>>): string[] {
  columns = columns.map(visible);
  const cells = rows.map((r) => columns.map((_, i) => visible(r[i] ?? '')));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i].length)));
  const head = ' ' + columns.map((c, i) => c.padStart(Math.floor((widths[i] + c.length) / 2)).padEnd(widths[i])).join(' | ');
  const sep = widths.map((w) => '-'.repeat(w + 2)).join('+');
  const body = cells.map((r) => ' ' + r.map((c, i) => c.padEnd(widths[i])).join(' | '));
  return [head.trimEnd(), sep, ...body.map((l) => l.trimEnd())];
}

const shortId = (id: unknown): string => String(id).slice(0, 12);

/** A gap marker's line: which events were lost and why (as the gateway signed it; checked by verify). */
function describeGap(d: Record<string, unknown>): string {
  try {
    const p = JSON.parse(String(d.payload)) as { fromSeq: number; toSeq: number; reason: string };
    return `LOST     events #${p.fromSeq}–#${p.toSeq} (${p.toSeq - p.fromSeq + 1}) were not recorded: ${oneLine(String(p.reason))}`;
  } catch {
    return 'LOST     a gap marker that cannot be read (run gatehouse verify)';
  }
}

/** What a policy verdict on an SSH event adds to its line: refusals stand out, flagged actions name their rule. */
function policyMark(d: Record<string, unknown>): string {
  const p = d.policy as { decision?: string; rule?: string | null; version?: number; reason?: string } | undefined;
  if (!p) return '';
  const rule = p.rule ? ` by rule "${oneLine(String(p.rule))}"` : '';
  if (p.decision === 'deny') return `  ✖ DENIED${rule} (policy v${String(p.version)}): ${oneLine(String(p.reason ?? ''))}`;
  if (p.decision === 'hold') return `  ✖ HELD${rule} (policy v${String(p.version)}): ${oneLine(String(p.reason ?? ''))}`;
  if (p.decision === 'audit') return `  ⚑ flagged${rule} (policy v${String(p.version)})`;
  const held = d.held as { request?: string; outcome?: string } | undefined;
  if (held) return `  ⏸ HELD${rule} (policy v${String(p.version)}), ${oneLine(String(held.outcome))} (request ${oneLine(String(held.request))})`;
  return '';
}

/** One timeline line for SSH and Git events (null: unknown event type). */
function describeSshOrGit(e: EventView): string | null {
  const d = e.data;
  const ch = `[ch ${String(d.ch ?? '-')}]`;
  switch (e.type) {
    case 'ssh.shell': {
      const pty = d.pty as { term?: string; cols?: number; rows?: number } | null;
      return `shell    ${ch} ${pty ? `pty ${pty.term} ${pty.cols}x${pty.rows}` : 'no pty'}${policyMark(d)}`;
    }
    case 'ssh.exec':
    case 'git.command':
      return `exec     ${ch} ${oneLine(String(d.command ?? `${String(d.service)} ${String(d.repo)}`))}${policyMark(d)}`;
    case 'ssh.subsystem':
      return `subsys   ${ch} ${String(d.name)}`;
    case 'term.in':
      return `input    ${ch} ${JSON.stringify(String(d.d)).slice(0, 100)}`;
    case 'ssh.stdin':
      return `stdin    ${ch} ${JSON.stringify(String(d.d)).slice(0, 100)}`;
    case 'ssh.stdin.denied':
      return `stdin    ${ch} ${JSON.stringify(String(d.text)).slice(0, 100)}${policyMark(d)}`;
    case 'ssh.line':
    case 'ssh.line.denied':
      return `line     ${ch} ${d.text !== undefined ? JSON.stringify(String(d.text)).slice(0, 100) : `(unreadable: ${oneLine(String(d.unreadable))})`}${policyMark(d)}`;
    case 'ssh.input.undelivered':
      return `input    ${ch} ${String(d.bytes)} bytes on record but not delivered: ${oneLine(String(d.reason))}`;
    case 'term.resize':
      return `resize   ${ch} ${String(d.cols)}x${String(d.rows)}`;
    case 'ssh.signal':
      return `signal   ${ch} ${String(d.name)}`;
    case 'ssh.env.refused':
      return `env      ${ch} ${String(d.name)} refused by policy`;
    case 'ssh.exit': {
      const parts = [d.code !== null && d.code !== undefined ? `exit ${String(d.code)}` : d.signal ? `killed by ${String(d.signal)}` : 'no exit status'];
      const o = d.stdout as { bytes?: number; truncated?: boolean } | undefined;
      const er = d.stderr as { bytes?: number } | undefined;
      if (o) parts.push(`stdout ${o.bytes} bytes${o.truncated ? ' (sample kept)' : ''}`);
      if (er && er.bytes) parts.push(`stderr ${er.bytes} bytes`);
      if (typeof d.durationMs === 'number') parts.push(`${d.durationMs} ms`);
      return `end      ${ch} ${parts.join(' · ')}`;
    }
    case 'file.op': {
      const size = typeof d.size === 'number' ? ` ${d.size} bytes` : '';
      const hash = d.sha256 ? ` sha256=${String(d.sha256).slice(0, 16)}…` : '';
      return `file     ${ch} ${String(d.via)} ${String(d.op)} ${String(d.path)}${d.to ? ` → ${String(d.to)}` : ''}${size}${hash} (${String(d.status)})${policyMark(d)}`;
    }
    case 'ssh.forward':
      return `forward  ${String(d.kind)} ${String(d.dest ?? d.bind ?? '')} ${d.allowed ? 'allowed' : `refused (${String(d.reason ?? '')})`}`;
    case 'ssh.forward.opened':
      return `forward  ${String(d.kind)} opened by the target`;
    case 'ssh.forward.failed':
      return `forward  ${String(d.kind)} failed: ${String(d.message ?? '')}`;
    case 'ssh.forward.closed':
      return `forward  ${String(d.kind)} closed: ${String(d.bytesToTarget)} bytes to target, ${String(d.bytesToClient)} to client`;
    case 'git.push': {
      const updates = (d.updates as Array<Record<string, unknown>> | null) ?? [];
      const lines = updates.map((u) => `${String(u.ref)} ${shortId(u.old)}..${shortId(u.new)} ${String(u.class)}${u.protectedBy ? ` (protected by ${String(u.protectedBy)})` : ''}${u.allowed ? '' : ` — ${String(u.reason)}`}`);
      return `push     ${String(d.verdict)}: ${lines.join('; ') || 'no ref updates'}`;
    }
    case 'git.push.result': {
      const refs = (d.refs as Array<{ ref: string; ok: boolean; reason?: string }> | null) ?? [];
      return `  → ${d.refusedByGateway ? 'refused by gatehouse' : `unpack ${String(d.unpack)}`}; ${refs.map((r) => `${r.ref} ${r.ok ? 'ok' : `rejected (${r.reason ?? ''})`}`).join('; ')}${typeof d.packBytes === 'number' ? ` · pack ${d.packBytes} bytes` : ''}`;
    }
    case 'git.fetch':
      return `fetch    ${String(d.repo)} protocol v${String(d.protocol)} · ${String(d.wantCount ?? 0)} wants${(d.refPrefixes as string[] | undefined)?.length ? ` · refs ${(d.refPrefixes as string[]).join(' ')}` : ''} · ${String(d.bytesToClient)} bytes sent`;
    case 'git.advertise':
      return `refs     ${String(d.service)} ${String(d.repo)} (HTTP ${String(d.status)})`;
    case 'git.probe':
      return `probe    asked the target about ${(d.tips as string[]).map(shortId).join(', ')} since ${shortId(d.have)}: ${d.answered ? `${String(d.commits)} commits` : 'no answer'}`;
    default:
      return null;
  }
}
