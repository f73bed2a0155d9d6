// Sessions: the recordings the signed-in identity may audit, newest first, a page at a time (the
// API pages by cursor, so a long history stays fast), filtered by the API (identity, kind,
// connection, protocol, outcome, when they started, words in what they ran, review flags) and, on
// the page, by integrity (a check per session). Each row links to the session.
import { useEffect, useRef, useState, type FormEvent, type KeyboardEvent } from 'react';
import { ApiError, get, type SessionView } from '../api.ts';
import { Shown, Time, visible } from '../format.tsx';
import { back, go, href } from '../router.ts';

const FIELDS = ['q', 'identity', 'kind', 'connection', 'protocol', 'outcome', 'from', 'to', 'review', 'integrity'] as const;

/** A datetime-local value (the viewer's zone) as the API's ISO time; '' when empty or invalid. */
function isoOf(local: string): string {
  const t = local ? new Date(local).getTime() : NaN;
  return Number.isNaN(t) ? '' : new Date(t).toISOString();
}

/** What GET /api/v1/sessions/:id/verify said, as the list shows it. */
type Checked = { state: 'verified' | 'incomplete' | 'broken' | 'open'; problem?: string };
interface Verification { ok: boolean; problem?: string; open: boolean; sealed: boolean; gaps?: unknown[] }
const CHECKS_AT_ONCE = 4;
const PAGE = 100;

export function Sessions({ query }: { query: URLSearchParams }) {
  const filters = Object.fromEntries(FIELDS.map((f) => [f, query.get(f) ?? ''])) as Record<(typeof FIELDS)[number], string>;
  const [rows, setRows] = useState<SessionView[] | null>(null);
  const [more, setMore] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [draft, setDraft] = useState(filters);
  // Filtering again with the same filters asks again (the hash does not change, so bump a counter).
  const [asked, setAsked] = useState(0);
  const key = `${query.toString()}#${asked}`;

  const page = (before?: string) => {
    const q = new URLSearchParams({ limit: String(PAGE) });
    for (const f of ['q', 'identity', 'kind', 'connection', 'protocol', 'outcome', 'review'] as const) if (filters[f]) q.set(f, filters[f]);
    for (const f of ['from', 'to'] as const) if (isoOf(filters[f])) q.set(f, isoOf(filters[f]));
    if (before) q.set('before', before);
    return get<SessionView[]>(`/api/v1/sessions?${q}`).then((r) => { setMore(r.length === PAGE); return r; });
  };
  useEffect(() => {
    setRows(null);
    setError(null);
    page().then(setRows, (err: unknown) => setError(err instanceof ApiError ? err.message : String(err)));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  const older = () => {
    const last = rows?.at(-1);
    if (last) page(last.id).then((r) => setRows([...(rows ?? []), ...r]), (err: unknown) => setError(err instanceof ApiError ? err.message : String(err)));
  };

  // Keyboard: rows are focusable, Enter opens one, ↑/↓ move between them; Esc on a session comes
  // back here with its row focused.
  const body = useRef<HTMLTableSectionElement>(null);
  useEffect(() => { back.list = window.location.hash || '#/sessions'; });
  useEffect(() => {
    if (!rows || !back.opened) return;
    body.current?.querySelector<HTMLElement>(`tr[data-session="${CSS.escape(back.opened)}"]`)?.focus();
    back.opened = null;
  }, [rows]);
  const onRowKey = (e: KeyboardEvent<HTMLTableRowElement>, id: string) => {
    if (e.key === 'Enter') { e.preventDefault(); go(`/sessions/${id}`); }
    else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      ((e.key === 'ArrowDown' ? e.currentTarget.nextElementSibling : e.currentTarget.previousElementSibling) as HTMLElement | null)?.focus();
    }
  };

  // Integrity: each session on the page checked by the gateway (chain, checkpoints, seal), on
  // request or when the list is filtered by it — a check per session, so per page, not in the store.
  const [checked, setChecked] = useState<Record<string, Checked>>({});
  const [checking, setChecking] = useState(false);
  const check = async (list: SessionView[]) => {
    const todo = list.filter((s) => !checked[s.id]);
    if (todo.length === 0) return;
    setChecking(true);
    const next = [...todo];
    const worker = async () => {
      for (let s = next.shift(); s; s = next.shift()) {
        const id = s.id;
        const v = await get<Verification>(`/api/v1/sessions/${encodeURIComponent(id)}/verify`).catch((err: unknown) => ({ ok: false, problem: err instanceof ApiError ? err.message : String(err), open: false, sealed: false }) as Verification);
        const c: Checked = !v.ok ? { state: 'broken', problem: v.problem ?? 'does not verify' } : v.gaps?.length ? { state: 'incomplete' } : v.open ? { state: 'open' } : { state: 'verified' };
        setChecked((m) => ({ ...m, [id]: c }));
      }
    };
    await Promise.all(Array.from({ length: CHECKS_AT_ONCE }, worker));
    setChecking(false);
  };
  useEffect(() => {
    if (filters.integrity && rows) void check(rows);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [rows, filters.integrity]);

  const shown = (rows ?? []).filter((s) => !filters.integrity || checked[s.id]?.state === filters.integrity);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    go('/sessions', draft);
    setAsked((n) => n + 1);
  };
  const field = (name: (typeof FIELDS)[number], label: string, extra: Record<string, unknown> = {}) => (
    <label>{label}<input name={name} value={draft[name]} onChange={(e) => setDraft({ ...draft, [name]: e.target.value })} {...extra} /></label>
  );

  return (
    <section>
      <h1>Sessions</h1>
      <form className="filters" onSubmit={submit} role="search">
        {field('q', 'Search', { type: 'search', placeholder: 'words from statements, commands, paths, refs', size: 32 })}
        {field('identity', 'Identity')}
        <label>Kind<select name="kind" value={draft.kind} onChange={(e) => setDraft({ ...draft, kind: e.target.value })}>
          <option value="">any</option><option value="agent">agent</option><option value="human">human</option><option value="ci">ci</option><option value="service">service</option>
        </select></label>
        {field('connection', 'Connection')}
        <label>Protocol<select name="protocol" value={draft.protocol} onChange={(e) => setDraft({ ...draft, protocol: e.target.value })}>
          <option value="">any</option><option value="postgres">postgres</option><option value="ssh">ssh</option><option value="git-http">git-http</option>
        </select></label>
        <label>Outcome<select name="outcome" value={draft.outcome} onChange={(e) => setDraft({ ...draft, outcome: e.target.value })}>
          <option value="">any</option><option value="open">open</option><option value="ended">ended</option><option value="refused">refused</option>
        </select></label>
        {field('from', 'Started from', { type: 'datetime-local', title: 'in your time zone' })}
        {field('to', 'to', { type: 'datetime-local', title: 'in your time zone' })}
        <label>Has<select name="review" value={draft.review} onChange={(e) => setDraft({ ...draft, review: e.target.value })}>
          <option value="">anything</option><option value="denied">denials</option><option value="held">holds</option><option value="flagged">flagged actions</option><option value="lost">lost events</option><option value="masked">masked output</option>
        </select></label>
        <label>Integrity<select name="integrity" value={draft.integrity} onChange={(e) => setDraft({ ...draft, integrity: e.target.value })}>
          <option value="">any</option><option value="verified">verified</option><option value="incomplete">incomplete (events lost)</option><option value="broken">broken</option><option value="open">open (not sealed yet)</option>
        </select></label>
        <button type="submit">Filter</button>
      </form>
      {error && <p role="alert" className="error">{visible(error)}</p>}
      {rows === null && !error && <p className="muted">Loading…</p>}
      {rows !== null && shown.length > 0 && <p className="muted keys">Tab or ↑/↓ to a row, Enter opens it, Esc comes back.</p>}
      {rows !== null && (
        <table className="list">
          <thead><tr><th>Started</th><th>Identity</th><th>Kind</th><th>Protocol</th><th>Connection</th><th>Application</th><th>Events</th><th>End</th><th>Integrity</th></tr></thead>
          <tbody ref={body}>
            {shown.map((s) => (
              <tr key={s.id} data-session={s.id} tabIndex={0} className="row" onKeyDown={(e) => onRowKey(e, s.id)} aria-label={`session ${s.id} of ${visible(s.identity.name, 80)} on ${visible(s.connection, 80)}`}>
                <td><a href={href(`/sessions/${s.id}`)}><Time iso={s.startedAt} /></a></td>
                <td>{visible(s.identity.name, 80)}</td>
                <td>{s.identity.kind}</td>
                <td>{s.protocol}</td>
                <td>{visible(s.connection, 80)}</td>
                <td><Shown text={s.applicationName} max={60} /></td>
                <td className="num">{s.eventCount}</td>
                <td>{s.endedAt === null ? <span className="badge live">open</span> : visible(s.endReason ?? '', 80)}
                  {(s.review ?? []).map((r) => <span key={r} className={`badge ${r === 'denied' ? 'deny' : r === 'held' ? 'hold' : ''}`}>{r}</span>)}</td>
                <td data-testid="row-integrity">{checked[s.id] ? <span className={`badge ${checked[s.id]!.state === 'broken' ? 'deny' : checked[s.id]!.state === 'verified' ? 'approved' : checked[s.id]!.state === 'incomplete' ? 'hold' : ''}`} title={checked[s.id]!.problem ? visible(checked[s.id]!.problem!, 500) : undefined}>{checked[s.id]!.state === 'broken' ? 'BROKEN' : checked[s.id]!.state}</span> : <span className="muted">—</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {rows !== null && shown.length === 0 && !(filters.integrity && checking) && <p className="muted">No sessions match.{filters.q ? ' Search finds ended sessions.' : ''}</p>}
      {rows !== null && rows.length > 0 && <p>
        <button type="button" onClick={() => void check(rows)} disabled={checking}>{checking ? `Checking integrity… ${Object.keys(checked).filter((id) => rows.some((r) => r.id === id)).length} of ${rows.length}` : 'Check integrity of these sessions'}</button>
        {filters.integrity && checking && <span className="muted"> (the list fills in as sessions are checked)</span>}
      </p>}
      {rows !== null && more && <button type="button" onClick={older}>Older sessions</button>}
    </section>
  );
}
