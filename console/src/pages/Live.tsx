// Live: the sessions open now (the list refreshed every two seconds); watch one as it happens —
// its terminals in a live player and its statements, streamed by the gateway (SSE) as they are
// recorded — and, for administrators, Terminate (the client gets its protocol's goodbye; the end is
// recorded and audited).
import { useEffect, useRef, useState } from 'react';
import * as AsciinemaPlayer from 'asciinema-player';
import 'asciinema-player/dist/bundle/asciinema-player.css';
import { ApiError, get, post, type EventView, type Me, type SessionView } from '../api.ts';
import { Shown, Time, pageKey, visible } from '../format.tsx';
import { go, href } from '../router.ts';

export function Live({ me, watch }: { me: Me; watch: string | null }) {
  const [open, setOpen] = useState<SessionView[] | null>(null);
  // The session watched is in the address (#/live?watch=ID): a link to it, and a reload, watch it again.
  const watching = watch;
  const setWatching = (id: string | null) => go('/live', { watch: id ?? undefined });
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let stop = false;
    const tick = () => get<SessionView[]>('/api/v1/sessions?open=true&limit=1000').then((all) => { if (!stop) setOpen(all.filter((s) => s.endedAt === null)); },
      (err: unknown) => setError(err instanceof ApiError ? err.message : String(err)));
    void tick();
    const t = setInterval(() => void tick(), 2000);
    return () => { stop = true; clearInterval(t); };
  }, []);
  // Esc stops watching (not from a field or the player).
  useEffect(() => {
    if (!watching) return;
    const onKey = (e: KeyboardEvent) => { if (e.key === 'Escape' && pageKey(e)) go('/live'); };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [watching]);
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
      {error && <p role="alert" className="error">{visible(error)}</p>}
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
  const [state, setState] = useState<'connecting' | 'live' | 'ended' | 'refused'>('connecting');
  const [refused, setRefused] = useState<string | null>(null);
  useEffect(() => {
    setEvents([]);
    setState('connecting');
    // Server-Sent Events: what is recorded so far, then each part as it is written (a reconnect
    // sends it all again: events are kept by their position).
    const es = new EventSource(`/api/v1/sessions/${encodeURIComponent(id)}/stream`);
    const seen = new Map<number, EventView>();
    es.addEventListener('open', () => setState('live'));
    es.addEventListener('events', (m) => {
      for (const e of JSON.parse((m as MessageEvent<string>).data) as EventView[]) seen.set(e.seq, e);
      setEvents([...seen.values()].sort((a, b) => a.seq - b.seq));
    });
    es.addEventListener('ended', () => { setState('ended'); es.close(); });
    // The viewer's token or audit grant went while watching: the gateway ended the stream.
    es.addEventListener('revoked', (m) => { setState('refused'); setRefused((JSON.parse((m as MessageEvent<string>).data) as { error: string }).error); es.close(); });
    // Refused when (re)connecting (signed out, grant gone): EventSource gives up on its own.
    es.addEventListener('error', () => setState((st) => (st === 'ended' || st === 'refused' ? st : es.readyState === EventSource.CLOSED ? 'refused' : 'connecting')));
    return () => es.close();
  }, [id]);
  const terminals = events.filter((e) => e.type === 'ssh.shell' || (e.type === 'ssh.exec' && e.data.pty));
  const results = new Map<number, Record<string, unknown>>();
  for (const e of events) if (e.type === 'result') results.set(Number(e.data.ref), e.data);
  const statements = events.filter((e) => STATEMENTS.has(e.type));
  return (
    <div className="watch" data-testid="watch">
      <h2>Watching <code>{id}</code> <span className={`badge ${state === 'live' ? 'live' : ''}`} data-testid="watch-state">{state}</span></h2>
      {refused && <p role="alert" className="error">{visible(refused)}</p>}
      {state !== 'refused' && terminals.map((t) => <LiveTerminal key={`${id}-${String(t.data.ch)}`} id={id} channel={Number(t.data.ch)} />)}
      <ol className="timeline" aria-live="polite">{statements.slice(-200).map((e) => {
        const r = results.get(e.seq);
        const err = r?.error as { message?: string } | undefined;
        return (
          <li key={e.seq} data-seq={e.seq}><a className="seq" href={href(`/sessions/${id}/e/${e.seq}`)}>#{e.seq}</a> <Time iso={e.ts} /> <code><Shown text={String(e.data.text ?? e.data.command ?? (e.data.statement ? `(statement ${String(e.data.statement)})` : ''))} max={500} /></code>
            {r && <span className="muted"> {err ? `error: ${visible(err.message ?? '', 200)}` : visible(String(r.tag ?? ''), 100)}</span>}</li>
        );
      })}</ol>
    </div>
  );
}

const STATEMENTS = new Set(['query', 'execute', 'ssh.exec', 'ssh.line', 'ssh.line.denied', 'git.command']);

/** One terminal channel as it happens: asciinema-player fed by the gateway's SSE stream. */
function LiveTerminal({ id, channel }: { id: string; channel: number }) {
  const el = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!el.current) return;
// The player's eventsource driver (not in its type declarations); no buffering: shown as it arrives.
    const source = { driver: 'eventsource', url: `/api/v1/sessions/${encodeURIComponent(id)}/terminals/${channel}/stream`, bufferTime: 0 } as unknown as AsciinemaPlayer.Source;
    const player = AsciinemaPlayer.create(source,
      el.current, { autoPlay: true, fit: 'width', controls: false });
    return () => player.dispose();
  }, [id, channel]);
  return (
    <figure className="replay">
      <figcaption>Terminal, channel {channel}, live</figcaption>
      <div ref={el} data-testid={`live-terminal-${channel}`} />
    </figure>
  );
}
