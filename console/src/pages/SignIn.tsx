// Sign-in by pasting a token (a fresh install has no identity provider). The token is sent once;
// the browser keeps only an HttpOnly cookie the gateway issues for it.
import { useState, type FormEvent } from 'react';
import { ApiError, post } from '../api.ts';

export function SignIn({ onSignedIn }: { onSignedIn: () => Promise<void> }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await post('/api/v1/console/sign-in', { token: token.trim() });
      setToken('');
      await onSignedIn();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="page narrow">
      <h1>Sign in to Gatehouse</h1>
      <form onSubmit={(e) => void submit(e)}>
        <label htmlFor="token">Token</label>
        <input id="token" name="token" type="password" autoComplete="off" autoFocus value={token} onChange={(e) => setToken(e.target.value)}
          placeholder="gh_…" aria-describedby="token-help" />
        <p id="token-help" className="muted">A token from <code>gatehouse token issue NAME</code> or <code>gatehouse login</code>. It is exchanged for a browser session of at most 8 hours.</p>
        <button type="submit" disabled={busy || token.trim() === ''}>Sign in</button>
        {error && <p role="alert" className="error">{error}</p>}
      </form>
    </main>
  );
}
