// Live: the sessions open now, their statements or terminal as they happen (refreshed every two
// seconds), and, for administrators, Terminate (the client gets its protocol's goodbye; the end is
// recorded and audited).
import { useEffect, useState } from 'react';
import { ApiError, get, post, type EventView, type Me, type SessionView } from '../api.ts';
import { Time, visible } from '../format.tsx';
import { href } from '../router.ts';

export function Live({ me }: { me: Me }) {
  const [open, setOpen] = useState<SessionView[] | null>(null);
  const [watching, setWatching] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let stop = false;
    const tick = () => get<SessionView[]>('/api/v1/sessions?limit=1000').then((all) => { if (!stop) setOpen(all.filter((s) => s.endedAt === null)); },
      (err: unknown) => setError(err instanceof ApiError ? err.message : String(err)));
    void tick();
    const t = setInterval(() => void tick(), 2000);
    return () => { stop = true; clearInterval(t); };
  }, []);
  const terminate = async (id: string) => {
    if (!window.confirm(`Terminate session ${id}? The client is disconnected.`)) return;
    try {
      await post(`/api/v1/sessions/${encodeURIComponent(id)}/kill`);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };
  return (
    <section>
      <h1>Live sessions</h1>
      {error && <p role="alert" className="error">{error}</p>}
      {open === null ? <p className="muted">Loading…</p> : open.length === 0 ? <p className="muted">No session is open.</p> : (
        <table className="list"><thead><tr><th>Started</th><th>Identity</th><th>Protocol</th><th>Connection</th><th>Events</th><th></th></tr></thead>
          <tbody>{open.map((s) => (
            <tr key={s.id} data-session={s.id}><td><a href={href(`/sessions/${s.id}`)}><Time iso={s.startedAt} /></a></td><td>{visible(s.identity.name)} ({s.identity.kind})</td><td>{s.protocol}</td><td>{visible(s.connection)}</td><td className="num">{s.eventCount}</td>
              <td><button type="button" onClick={() => setWatching(watching === s.id ? null : s.id)}>{watching === s.id ? 'Stop watching' : 'Watch'}</button>
                {me.admin && <button type="button" className="danger" onClick={() => void terminate(s.id)}>Terminate</button>}</td></tr>
          ))}</tbody></table>
      )}
      {watching && <Watch id={watching} />}
    </section>
  );
}

function Watch({ id }: { id: string }) {
  const [events, setEvents] = useState<EventView[]>([]);
  useEffect(() => {
    let stop = false;
    const tick = () => get<{ events: EventView[] }>(`/api/v1/sessions/${encodeURIComponent(id)}`).then((d) => { if (!stop) setEvents(d.events); }, () => undefined);
    void tick();
    const t = setInterval(() => void tick(), 1000);
    return () => { stop = true; clearInterval(t); };
  }, [id]);
  const out = events.filter((e) => e.type === 'term.out').map((e) => String(e.data.d)).join('');
  const statements = events.filter((e) => e.type === 'query' || e.type === 'execute' || e.type === 'ssh.exec' || e.type === 'ssh.line');
  return (
    <div className="watch" aria-live="polite">
      <h2>Watching <code>{id}</code></h2>
      {out && <pre className="terminal">{visible(out.slice(-8000), 8000)}</pre>}
      <ol className="timeline">{statements.slice(-50).map((e) => <li key={e.seq}><Time iso={e.ts} /> <code>{visible(String(e.data.text ?? e.data.command ?? ''), 500)}</code></li>)}</ol>
    </div>
  );
}
