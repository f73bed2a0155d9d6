// One session: who, where and how it ended; its timeline (statements with parameters, outcome,
// duration and the result sample as a table; commands with exit status; file operations; Git
// pushes with each ref update; policy decisions and holds marked); its terminals in a player;
// its integrity (chain, checkpoints, seal) and the export bundle. Each event has a deep link.
import { useEffect, useState } from 'react';
import { ApiError, get, type EventView, type SessionView } from '../api.ts';
import { Shown, Time, duration, pageKey, visible } from '../format.tsx';
import { back, href } from '../router.ts';
import { Replay, type Terminal } from './Replay.tsx';

interface Detail { session: SessionView; events: EventView[] }
interface Verification { ok: boolean; problem?: string; open: boolean; sealed: boolean; events: number; checkpoints: number; gaps?: unknown[]; trust: string }

export function Session({ id, focus }: { id: string; focus: number | null }) {
  const [detail, setDetail] = useState<Detail | null>(null);
  const [terminals, setTerminals] = useState<Terminal[]>([]);
  const [verified, setVerified] = useState<Verification | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setDetail(null);
    setError(null);
    setVerified(null);
    get<Detail>(`/api/v1/sessions/${encodeURIComponent(id)}`).then(setDetail, (err: unknown) => setError(err instanceof ApiError ? err.message : String(err)));
    get<Terminal[]>(`/api/v1/sessions/${encodeURIComponent(id)}/terminals`).then(setTerminals, () => setTerminals([]));
    get<Verification>(`/api/v1/sessions/${encodeURIComponent(id)}/verify`).then(setVerified, () => setVerified(null));
  }, [id]);
  // A deep link to an event (#/sessions/ID/e/SEQ) scrolls to it and puts the keyboard there.
  useEffect(() => {
    if (focus === null || !detail) return;
    const el = document.getElementById(`e${focus}`);
    el?.scrollIntoView({ block: 'center' });
    el?.focus({ preventScroll: true });
  }, [focus, detail]);
  // Esc goes back to the list it came from.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key !== 'Escape' || !pageKey(e)) return;
      back.opened = id;
      window.location.hash = back.list;
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [id]);

  if (error) return <p role="alert" className="error">{visible(error)}</p>;
  if (!detail) return <p className="muted">Loading…</p>;
  const { session: s, events } = detail;
  const results = new Map<number, Record<string, unknown>>();
  for (const e of events) if (e.type === 'result') results.set(Number(e.data.ref), e.data);
  const claims = Object.entries(s.identity.claims ?? {});
  return (
    <section>
      <h1>Session <code>{s.id}</code></h1>
      <dl className="facts">
        <dt>Identity</dt><dd>{visible(s.identity.name)} ({s.identity.kind}){claims.length > 0 && <> — run <a href={href('/runs', Object.fromEntries(claims.slice(0, 3).map(([k, v]) => [`claim.${k}`, v])))}>{visible(claims.map(([k, v]) => `${k}=${v}`).join(' '), 300)}</a></>}</dd>
        <dt>Connection</dt><dd>{visible(s.connection)} ({s.protocol}) → {visible(s.target.user)}@{visible(s.target.host)}:{s.target.port}{s.target.database ? `/${visible(s.target.database)}` : ''}</dd>
        <dt>Client</dt><dd>{visible(s.clientAddr)} {s.applicationName && <>· <Shown text={s.applicationName} /></>}</dd>
        <dt>Started</dt><dd><Time iso={s.startedAt} /></dd>
        <dt>Ended</dt><dd>{s.endedAt ? <><Time iso={s.endedAt} /> after {duration(s.startedAt, s.endedAt)} — {visible(s.endReason ?? '')}</> : <><span className="badge live">open</span> <a href={href('/live', { watch: s.id })}>watch it live</a></>}</dd>
        <dt>Integrity</dt><dd data-testid="integrity">{verified ? <Integrity v={verified} /> : 'checking…'} · <a href={`/api/v1/sessions/${encodeURIComponent(s.id)}/bundle`} download={`${s.id}.bundle.tar.gz`}>download the export bundle</a> (<code>gatehouse verify {s.id}.bundle.tar.gz</code> checks it offline; <code>gatehouse sessions export {s.id} --out DIR</code> writes the same, unpacked)</dd>
      </dl>
      {terminals.map((t) => <Replay key={t.channel} terminal={t} />)}
      <h2>Timeline</h2>
      <ol className="timeline">
        {events.filter((e) => e.type !== 'result' && e.type !== 'term.out' && e.type !== 'term.in').map((e) => (
          <li key={e.seq} id={`e${e.seq}`} tabIndex={-1} aria-current={focus === e.seq ? 'location' : undefined} className={`ev ev-${e.type.replace(/\./g, '-')}${focus === e.seq ? ' focus' : ''}${marked(e.data)}`}>
            <a className="seq" href={href(`/sessions/${s.id}/e/${e.seq}`)} title="link to this event">#{e.seq}</a>
            <Time iso={e.ts} />
            <span className="type">{e.type}</span>
            <EventBody e={e} result={results.get(e.seq)} />
          </li>
        ))}
      </ol>
    </section>
  );
}

function Integrity({ v }: { v: Verification }) {
  const what = `${v.events} events, ${v.checkpoints} signed checkpoint${v.checkpoints === 1 ? '' : 's'}, ${v.sealed ? 'sealed' : v.open ? 'open (not sealed yet)' : 'not sealed'}`;
  if (!v.ok) return <span className="badge deny" title={v.trust}>BROKEN: {visible(v.problem ?? 'does not verify')}</span>;
  return <span title={`checked against the ${v.trust}`}><span className="badge approved">{v.gaps?.length ? 'verified, incomplete (events declared lost)' : 'verified'}</span> {what}</span>;
}

function marked(d: Record<string, unknown>): string {
  const p = d.policy as { decision?: string } | undefined;
  if (d.held) return ' held';
  if (p?.decision === 'deny') return ' denied';
  if (p?.decision === 'audit') return ' flagged';
  return '';
}

function PolicyMark({ d }: { d: Record<string, unknown> }) {
  const p = d.policy as { decision: string; rule: string | null; version: number; reason: string } | undefined;
  const held = d.held as { request: string; outcome: string } | undefined;
  if (!p && !held) return null;
  const label = held ? `HELD (${held.outcome})` : p!.decision === 'deny' ? 'DENIED' : p!.decision === 'audit' ? 'flagged' : p!.decision;
  return <span className={`badge ${p?.decision ?? ''}`} title={p ? visible(p.reason) : ''}>{label}{p?.rule ? ` · rule ${visible(p.rule)} (v${p.version})` : ''}</span>;
}

function EventBody({ e, result }: { e: EventView; result?: Record<string, unknown> }) {
  const d = e.data;
  switch (e.type) {
    case 'query':
    case 'execute':
    case 'parse':
      return (
        <div className="body">
          <pre className="sql"><Shown text={String(d.text ?? `(statement ${String(d.statement ?? d.portal ?? '?')})`)} max={20000} /></pre>
          {Array.isArray(d.params) && d.params.length > 0 && <p className="params">params: {visible(JSON.stringify(d.params), 2000)}</p>}
          <PolicyMark d={d} />
          {result && <Outcome r={result} />}
        </div>
      );
    case 'ssh.exec':
    case 'git.command':
      return <div className="body"><code><Shown text={String(d.command ?? `${String(d.service)} ${String(d.repo)}`)} /></code> <PolicyMark d={d} /></div>;
    case 'ssh.shell':
      return <div className="body">shell {d.pty ? `(pty ${String((d.pty as { term?: string }).term)})` : '(no pty)'} <PolicyMark d={d} /></div>;
    case 'ssh.line':
    case 'ssh.line.denied':
    case 'ssh.stdin.denied':
      return <div className="body"><code><Shown text={String(d.text ?? `(unreadable: ${String(d.unreadable)})`)} /></code> <PolicyMark d={d} /></div>;
    case 'ssh.exit': {
      const out = d.stdout as { bytes?: number; sample?: string } | undefined;
      return <div className="body">{d.code !== null && d.code !== undefined ? `exit ${String(d.code)}` : d.signal ? `killed by ${String(d.signal)}` : 'no exit status'}{typeof d.durationMs === 'number' ? ` · ${d.durationMs} ms` : ''}{out?.bytes ? ` · stdout ${out.bytes} bytes` : ''}</div>;
    }
    case 'file.op':
    case 'file.open':
      return <div className="body">{String(d.op ?? d.mode ?? '')} <code>{visible(String(d.path ?? ''))}</code>{d.to ? <> → <code>{visible(String(d.to))}</code></> : null}{typeof d.size === 'number' ? ` · ${d.size} bytes` : ''}{d.sha256 ? <> · sha256 <code title={String(d.sha256)}>{String(d.sha256).slice(0, 16)}…</code></> : null}{d.status ? ` · ${visible(String(d.status))}` : ''} <PolicyMark d={d} /></div>;
    case 'git.push': {
      const updates = (d.updates ?? []) as Array<{ ref: string; old: string; new: string; class: string; protectedBy?: string; allowed: boolean; reason?: string; policy?: { decision: string; rule: string | null } }>;
      return (
        <div className="body">
          push {String(d.verdict ?? '')} {d.held ? <PolicyMark d={{ held: d.held }} /> : null}
          <table className="refs"><thead><tr><th>Ref</th><th>Old → new</th><th>Kind</th><th>Protected</th><th>Decision</th></tr></thead>
            <tbody>{updates.map((u) => (
              <tr key={u.ref} className={u.allowed ? '' : 'denied'}><td><code>{visible(u.ref)}</code></td><td><code>{u.old.slice(0, 10)} → {u.new.slice(0, 10)}</code></td><td>{u.class}</td><td>{u.protectedBy ?? ''}</td>
                <td>{u.allowed ? 'allowed' : `refused: ${visible(u.reason ?? '')}`}{u.policy?.rule ? ` (rule ${visible(u.policy.rule)})` : ''}</td></tr>
            ))}</tbody></table>
        </div>
      );
    }
    case 'session.start': {
      const access = d.access as { reason?: string } | undefined;
      return <div className="body">started{access?.reason ? ` — ${visible(access.reason)}` : ''}</div>;
    }
    case 'session.end':
      return <div className="body">ended — {visible(String(d.reason ?? ''))}</div>;
    case 'policy.hold':
      return <div className="body">held for approval: request <code>{String(d.request)}</code> (rule {visible(String(d.rule ?? ''))}), refused if not decided by <Time iso={String(d.expiresAt)} /></div>;
    case 'policy.decision':
      return <div className="body">request <code>{String(d.request)}</code>: <strong>{String(d.kind)}</strong>{Array.isArray(d.by) ? ` by ${d.by.join(', ')}` : d.by ? ` by ${visible(String(d.by))}` : ''}{d.reason ? ` — ${visible(String(d.reason))}` : ''}</div>;
    default:
      return <div className="body"><code className="raw">{visible(JSON.stringify(d), 600)}</code></div>;
  }
}

function Outcome({ r }: { r: Record<string, unknown> }) {
  const err = r.error as { severity?: string; code?: string; message?: string } | undefined;
  const columns = r.columns as string[] | undefined;
  const sample = r.sample as Array<Array<string | null>> | undefined;
  const us = typeof r.durationUs === 'number' ? r.durationUs : null;
  return (
    <div className="outcome">
      {r.skipped ? 'not executed (an earlier error in the pipeline)' : err ? <span className="error">{err.severity ?? 'ERROR'} {err.code} <Shown text={err.message ?? ''} /></span> : <span>{String(r.tag ?? (Array.isArray(r.tags) ? r.tags.join(', ') : ''))}</span>}
      {typeof r.rowsReturned === 'number' && ` · ${r.rowsReturned} row${r.rowsReturned === 1 ? '' : 's'}`}
      {us !== null && ` · ${us >= 1000 ? `${(us / 1000).toFixed(1)} ms` : `${us} µs`}`}
      {sample && sample.length > 0 && (
        <table className="sample">
          {columns && <thead><tr>{columns.map((c, i) => <th key={i}><Shown text={c} max={100} /></th>)}</tr></thead>}
          <tbody>{sample.slice(0, 50).map((row, i) => <tr key={i}>{row.map((v, j) => <td key={j}>{v === null ? <span className="muted">NULL</span> : <Shown text={v} max={300} />}</td>)}</tr>)}</tbody>
        </table>
      )}
      {r.sampleTruncated ? <p className="muted">sample truncated</p> : null}
    </div>
  );
}
