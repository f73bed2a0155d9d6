// Hash routes (#/sessions/ID/e/12): deep links that any static file server can serve.
import { useEffect, useState } from 'react';

export interface Route { path: string[]; query: URLSearchParams }

function current(): Route {
  const hash = window.location.hash.replace(/^#/, '') || '/sessions';
  const [p, q] = hash.split('?', 2);
  return { path: (p ?? '').split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(q ?? '') };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(current);
  useEffect(() => {
    const on = () => setRoute(current());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

export function href(path: string, query?: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v) q.set(k, v);
  const s = q.toString();
  return `#${path}${s ? `?${s}` : ''}`;
}

export function go(path: string, query?: Record<string, string | undefined>): void {
  window.location.hash = href(path, query).slice(1);
}

/** Where Esc goes back to from a session (the list as it was filtered), and the row to focus there. */
export const back: { list: string; opened: string | null } = { list: '#/sessions', opened: null };
