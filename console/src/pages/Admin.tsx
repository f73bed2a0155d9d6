// Administration, read-only: identities, tokens (never their secrets: the API has only hashes),
// grants, connections (never credentials: the API says only whether one is stored), policy
// versions and the admin audit log. Changes go through the CLI or the API.
import { useEffect, useState } from 'react';
import { ApiError, get } from '../api.ts';
import { visible } from '../format.tsx';
import { href } from '../router.ts';

const TABS: Array<[string, string, string]> = [
  ['identities', 'Identities', '/api/v1/identities'], ['tokens', 'Tokens', '/api/v1/tokens'], ['grants', 'Grants', '/api/v1/grants'],
  ['connections', 'Connections', '/api/v1/connections'], ['policy', 'Policy', '/api/v1/policy/versions'], ['audit', 'Audit log', '/api/v1/audit?limit=500'],
];

export function Admin({ tab }: { tab: string }) {
  const current = TABS.find(([k]) => k === tab) ?? TABS[0]!;
  const [rows, setRows] = useState<Array<Record<string, unknown>> | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setRows(null);
    setError(null);
    get<Array<Record<string, unknown>>>(current[2]).then((r) => setRows(current[0] === 'audit' ? [...r].reverse() : r), (err: unknown) => setError(err instanceof ApiError ? err.message : String(err)));
  }, [current]);
  const columns = rows && rows.length > 0 ? Object.keys(rows[0]!) : [];
  return (
    <section>
      <h1>Admin</h1>
      <nav className="tabs" aria-label="Admin">{TABS.map(([k, label]) => <a key={k} href={href(`/admin/${k}`)} aria-current={k === current[0] ? 'page' : undefined}>{label}</a>)}</nav>
      {error && <p role="alert" className="error">{visible(error)}</p>}
      {rows === null && !error && <p className="muted">Loading…</p>}
      {rows && (
        <table className="list">
          <thead><tr>{columns.map((c) => <th key={c}>{c}</th>)}</tr></thead>
          <tbody>{rows.map((r, i) => <tr key={i}>{columns.map((c) => <td key={c}>{cell(r[c])}</td>)}</tr>)}</tbody>
        </table>
      )}
    </section>
  );
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return visible(JSON.stringify(v), 400);
  return visible(String(v), 400);
}
