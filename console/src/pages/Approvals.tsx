// Approvals inbox: pending holds and access requests the signed-in identity may decide, live
// (Server-Sent Events from /api/v1/approvals/events), with approve / deny and a reason; below, the
// identity's own requests, so a requester sees the decision arrive.
import { useEffect, useState } from 'react';
import { ApiError, post, type ApprovalView, type Me } from '../api.ts';
import { Time, visible } from '../format.tsx';
import { href } from '../router.ts';

export function Approvals({ me }: { me: Me }) {
  const [pending, setPending] = useState<ApprovalView[] | null>(null);
  const [mine, setMine] = useState<ApprovalView[]>([]);
  const [live, setLive] = useState(false);
  const [gone, setGone] = useState<string | null>(null);
  useEffect(() => {
    const source = new EventSource('/api/v1/approvals/events');
    source.addEventListener('approvals', (ev) => {
      const data = JSON.parse((ev as MessageEvent<string>).data) as { pending: ApprovalView[]; mine: ApprovalView[] };
      setPending(data.pending);
      setMine(data.mine);
      setLive(true);
    });
    source.onerror = () => setLive(false);
    // The token this page signed in with went (signed out elsewhere, revoked, expired).
    source.addEventListener('revoked', (ev) => {
      source.close();
      setLive(false);
      setGone((JSON.parse((ev as MessageEvent<string>).data) as { error: string }).error);
    });
    return () => source.close();
  }, []);
  return (
    <section>
      <h1>Approvals <span className={`badge ${live ? 'live' : ''}`} aria-live="polite">{live ? 'live' : 'connecting…'}</span></h1>
      {gone && <p role="alert" className="error">{visible(gone)}</p>}
      {pending === null ? <p className="muted">Loading…</p> : pending.length === 0 ? <p className="muted">Nothing waits for a decision you may take.</p> : (
        <ul className="cards">{pending.map((a) => <Request key={a.id} a={a} mayDecide={a.requester.name !== me.identity.name} />)}</ul>
      )}
      <h2>Your requests</h2>
      {mine.length === 0 ? <p className="muted">None.</p> : (
        <table className="list"><thead><tr><th>Request</th><th>What</th><th>Connection</th><th>Status</th><th>Decided</th></tr></thead>
          <tbody>{mine.map((a) => (
            <tr key={a.id} data-request={a.id}><td><code>{a.id}</code></td><td>{describe(a)}</td><td>{visible(a.connection)}</td>
              <td><span className={`badge ${a.status}`}>{a.status}</span>{a.reason ? ` — ${visible(a.reason)}` : ''}</td><td><Time iso={a.decidedAt} /></td></tr>
          ))}</tbody></table>
      )}
    </section>
  );
}

function describe(a: ApprovalView): string {
  const x = a.action;
  if (x.kind === 'sql') return visible(String(x.text), 500);
  if (x.kind === 'exec') return visible(String(x.command), 500);
  if (x.kind === 'shell') return 'open a shell';
  if (x.kind === 'git') return (x.updates as Array<{ ref: string; kind: string }>).map((u) => `${u.kind} ${visible(u.ref)}`).join(', ');
  if (x.kind === 'access') return `access to ${visible(String(x.connection))} for ${Math.round(Number(x.seconds) / 60)} min: ${visible(String(x.reason))}`;
  return visible(JSON.stringify(x), 300);
}

function Request({ a, mayDecide }: { a: ApprovalView; mayDecide: boolean }) {
  const [reason, setReason] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const decide = async (decision: 'approve' | 'deny') => {
    setBusy(true);
    setError(null);
    try {
      await post(`/api/v1/approvals/${encodeURIComponent(a.id)}/${decision}`, reason.trim() ? { reason: reason.trim() } : {});
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  const claims = Object.entries(a.requester.claims ?? {});
  return (
    <li className="card" data-request={a.id}>
      <div className="what"><pre>{describe(a)}</pre></div>
      <p>{visible(a.requester.name)} ({a.requester.kind}){claims.length > 0 && ` · ${claims.map(([k, v]) => `${k}=${visible(v, 100)}`).join(' ')}`} on <strong>{visible(a.connection)}</strong> ({a.protocol})
        {a.rule && <> · rule {visible(a.rule)} (v{a.policyVersion})</>} · asked <Time iso={a.createdAt} /> · expires <Time iso={a.expiresAt} />
        {a.session && <> · <a href={href(`/sessions/${a.session}`)}>session</a></>}
        {a.quorum > 1 && <> · {a.decisions.filter((d) => d.decision === 'approve').length}/{a.quorum} approvals</>}</p>
      {mayDecide ? (
        <div className="decide">
          <label>Reason <input value={reason} onChange={(e) => setReason(e.target.value)} placeholder="required to deny" /></label>
          <button type="button" disabled={busy} onClick={() => void decide('approve')}>Approve</button>
          <button type="button" disabled={busy || reason.trim() === ''} className="danger" onClick={() => void decide('deny')}>Deny</button>
        </div>
      ) : <p className="muted">Your own request: another identity decides it.</p>}
      {error && <p role="alert" className="error">{visible(error)}</p>}
    </li>
  );
}
