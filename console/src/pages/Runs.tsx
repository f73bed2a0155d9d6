// Agent runs: every session of one workload run (the same run claims, e.g. one CI job) on one
// timeline across protocols, in the order things happened: the psql statements, the ssh commands
// and the git push of that run side by side.
import { useEffect, useState, type FormEvent } from 'react';
import { ApiError, get, type EventView, type SessionView } from '../api.ts';
import { Time, visible } from '../format.tsx';
import { go, href } from '../router.ts';

const SHOWN = new Set(['query', 'execute', 'ssh.exec', 'ssh.shell', 'ssh.line', 'ssh.line.denied', 'git.command', 'git.push', 'file.op', 'file.open', 'policy.hold', 'policy.decision', 'session.start', 'session.end']);

export function Runs({ query }: { query: URLSearchParams }) {
  const claims = [...query.entries()].filter(([k]) => k.startsWith('claim.')).map(([k, v]) => [k.slice(6), v] as const);
  const [draft, setDraft] = useState(claims.map(([k, v]) => `${k}=${v}`).join(' '));
  const [items, setItems] = useState<Array<{ s: SessionView; e: EventView }> | null>(null);
  const [error, setError] = useState<string | null>(null);
  const key = query.toString();
  useEffect(() => {
    if (claims.length === 0) { setItems(null); return; }
    setItems(null);
    setError(null);
    const q = new URLSearchParams({ limit: '200' });
    for (const [k, v] of claims) q.append('claim', `${k}=${v}`);
    (async () => {
      const sessions = await get<SessionView[]>(`/api/v1/sessions?${q}`);
      const details = await Promise.all(sessions.map((s) => get<{ events: EventView[] }>(`/api/v1/sessions/${encodeURIComponent(s.id)}`).then((d) => d.events.map((e) => ({ s, e })))));
      setItems(details.flat().filter((x) => SHOWN.has(x.e.type)).sort((a, b) => a.e.tsUs - b.e.tsUs));
    })().catch((err: unknown) => setError(err instanceof ApiError ? err.message : String(err)));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    go('/runs', Object.fromEntries(draft.split(/\s+/).filter((x) => x.includes('=')).map((x) => [`claim.${x.slice(0, x.indexOf('='))}`, x.slice(x.indexOf('=') + 1)])));
  };
  return (
    <section>
      <h1>Agent runs</h1>
      <form className="filters" onSubmit={submit}>
        <label>Run claims <input value={draft} onChange={(e) => setDraft(e.target.value)} placeholder="run_id=1234 repository=org/app" size={48} /></label>
        <button type="submit">Show run</button>
      </form>
      {error && <p role="alert" className="error">{visible(error)}</p>}
      {claims.length > 0 && items === null && !error && <p className="muted">Loading…</p>}
      {items && (
        <ol className="timeline run">
          {items.map(({ s, e }) => (
            <li key={`${s.id}-${e.seq}`} className={`ev proto-${s.protocol}`} data-protocol={s.protocol}>
              <Time iso={e.ts} /> <span className="badge">{s.protocol}</span> <a href={href(`/sessions/${s.id}/e/${e.seq}`)}>{visible(s.connection)}</a> <span className="type">{e.type}</span>{' '}
              <code>{visible(String(e.data.text ?? e.data.command ?? (e.type === 'git.push' ? (e.data.updates as Array<{ ref: string }> | undefined)?.map((u) => u.ref).join(', ') ?? '' : e.data.path ?? '')), 300)}</code>
            </li>
          ))}
        </ol>
      )}
      {items && items.length === 0 && <p className="muted">No sessions carry these claims.</p>}
    </section>
  );
}
