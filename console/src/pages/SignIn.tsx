// Sign-in. Through the gateway's identity provider when it has one: the same sign-in as
// `gatehouse login` — the provider's pages open in a new window, the person confirms there with the
// code this page shows (so a link sent by someone else cannot sign them in), and the token it
// yields is exchanged at once for the browser's session cookie and then revoked. Or, on a fresh
// install without a provider, by pasting a token. Either way the browser keeps only an HttpOnly
// cookie the gateway issues.
import { useEffect, useRef, useState, type FormEvent } from 'react';
import { ApiError, get, post } from '../api.ts';
import { visible } from '../format.tsx';

interface Providers { providers: string[]; default: string | null }
interface Started { loginUrl: string; userCode: string; pollToken: string; provider: string; expiresAt: string }
interface Poll { status: 'pending' | 'signed-in'; token?: string }

export function SignIn({ onSignedIn }: { onSignedIn: () => Promise<void> }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [providers, setProviders] = useState<Providers>({ providers: [], default: null });
  const [started, setStarted] = useState<Started | null>(null);
  const polling = useRef(false);

  useEffect(() => { get<Providers>('/api/v1/login/providers').then(setProviders, () => undefined); }, []);

  const exchange = async (t: string) => {
    await post('/api/v1/console/sign-in', { token: t });
    await onSignedIn();
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await exchange(token.trim());
      setToken('');
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };

  const startSso = async (provider: string) => {
    setError(null);
    try {
      const s = await post<Started>('/api/v1/login/start', { provider, host: 'the web console' });
      setStarted(s);
      window.open(s.loginUrl, 'gatehouse-sign-in', 'noopener');
      if (polling.current) return;
      polling.current = true;
      for (;;) {
        await new Promise((r) => setTimeout(r, 1500));
        const p = await post<Poll>('/api/v1/login/poll', { pollToken: s.pollToken });
        if (p.status === 'signed-in' && p.token) {
          await exchange(p.token);
          // The browser has its own session now: the sign-in's token is not kept anywhere.
          await fetch('/api/v1/logout', { method: 'POST', headers: { authorization: `Bearer ${p.token}`, 'content-type': 'application/json' }, body: '{}' }).catch(() => undefined);
          return;
        }
      }
    } catch (err) {
      setStarted(null);
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      polling.current = false;
    }
  };

  return (
    <main className="page narrow">
      <h1>Sign in to Gatehouse</h1>
      {providers.providers.length > 0 && (
        <section aria-label="Identity provider">
          {providers.providers.map((p) => <button key={p} type="button" onClick={() => void startSso(p)}>Sign in with {p}</button>)}
          {started && (
            <div role="status" className="card">
              <p>Finish signing in with {started.provider} in the window that opened (<a href={started.loginUrl} target="_blank" rel="noopener noreferrer">open it again</a>), and confirm there with this code:</p>
              <p className="code" data-testid="sign-in-code"><strong>{started.userCode}</strong></p>
              <p className="muted">This page signs you in once you have confirmed.</p>
            </div>
          )}
          <p className="muted">or</p>
        </section>
      )}
      <form onSubmit={(e) => void submit(e)}>
        <label htmlFor="token">Token</label>
        <input id="token" name="token" type="password" autoComplete="off" autoFocus={providers.providers.length === 0} value={token} onChange={(e) => setToken(e.target.value)}
          placeholder="ght_…" aria-describedby="token-help" />
        <p id="token-help" className="muted">A token from <code>gatehouse token issue NAME</code> or <code>gatehouse login</code>. It is exchanged for a browser session of at most 8 hours.</p>
        <button type="submit" disabled={busy || token.trim() === ''}>Sign in</button>
        {error && <p role="alert" className="error">{visible(error)}</p>}
      </form>
    </main>
  );
}
