// The console's shell: who is signed in (or the sign-in page), the navigation, and the screen the
// hash route names. Every screen reads the HTTP API with the signed-in identity's grants; what the
// identity may not see, the API refuses, and the screen says so.
import { useCallback, useEffect, useState } from 'react';
import { ApiError, get, post, setCsrf, type Me } from './api.ts';
import { href, useRoute } from './router.ts';
import { SignIn } from './pages/SignIn.tsx';
import { Sessions } from './pages/Sessions.tsx';
import { Session } from './pages/Session.tsx';
import { Approvals } from './pages/Approvals.tsx';
import { Live } from './pages/Live.tsx';
import { Runs } from './pages/Runs.tsx';
import { Admin } from './pages/Admin.tsx';

export function App() {
  const [me, setMe] = useState<Me | null | undefined>(undefined);
  const route = useRoute();

  const load = useCallback(async () => {
    try {
      const m = await get<Me>('/api/v1/console/session');
      setCsrf(m.csrf ?? null);
      setMe(m);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) setMe(null);
      else throw err;
    }
  }, []);
  useEffect(() => { void load(); }, [load]);

  if (me === undefined) return <main className="page"><p className="muted">Loading…</p></main>;
  if (me === null) return <SignIn onSignedIn={load} />;

  const [screen] = route.path;
  const nav: Array<[string, string]> = [['sessions', 'Sessions'], ['runs', 'Agent runs'], ['approvals', 'Approvals'], ['live', 'Live'], ...(me.admin ? [['admin', 'Admin'] as [string, string]] : [])];
  const signOut = async () => {
    await post('/api/v1/console/sign-out');
    setCsrf(null);
    setMe(null);
  };
  return (
    <>
      <header className="top">
        <a className="brand" href={href('/sessions')}>Gatehouse</a>
        <nav aria-label="Main">
          {nav.map(([k, label]) => <a key={k} href={href(`/${k}`)} aria-current={screen === k || (!screen && k === 'sessions') ? 'page' : undefined}>{label}</a>)}
        </nav>
        <span className="who" title={me.identity.kind}>{me.identity.name}{me.admin ? ' (admin)' : ''}</span>
        <button type="button" onClick={() => void signOut()}>Sign out</button>
      </header>
      <main className="page">{screenFor(route.path, route.query, me)}</main>
    </>
  );
}

function screenFor(path: string[], query: URLSearchParams, me: Me) {
  switch (path[0] ?? 'sessions') {
    case 'sessions': return path[1] ? <Session id={path[1]} focus={path[2] === 'e' ? Number(path[3]) : null} /> : <Sessions query={query} />;
    case 'runs': return <Runs query={query} />;
    case 'approvals': return <Approvals me={me} />;
    case 'live': return <Live me={me} watch={query.get('watch')} />;
    case 'admin': return <Admin tab={path[1] ?? 'identities'} />;
    default: return <p>Unknown page. <a href={href('/sessions')}>Sessions</a></p>;
  }
}
