import type { ReactElement } from 'react';
// Times in the viewer's zone with UTC on hover; text that came from clients shown as text only
// (React escapes it; control characters, and the invisible characters that reorder or hide text,
// are made visible, never interpreted).
const LOCAL: Intl.DateTimeFormatOptions = { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short' };

/** "2026-12-04 18:06:11.123 UTC" */
export function utc(iso: string): string {
  return `${new Date(iso).toISOString().replace('T', ' ').replace('Z', '')} UTC`;
}

export function Time({ iso }: { iso: string | null }) {
  if (!iso) return <span className="muted">—</span>;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return <span className="muted">{visible(iso, 40)}</span>;
  return <time dateTime={d.toISOString()} title={utc(iso)}>{d.toLocaleString(undefined, LOCAL)}</time>;
}

// C0 and C1 controls and DEL; bidirectional embeddings, overrides, isolates and marks; zero-width
// characters; line and paragraph separators; the byte-order mark.
// eslint-disable-next-line no-control-regex
const HIDDEN = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

// eslint-disable-next-line no-control-regex
const HIDDEN_ONE = new RegExp(HIDDEN.source, 'g');

export function visible(text: string, max = 2000): string {
  const shown = text.replace(HIDDEN, (c) => {
    const n = c.charCodeAt(0);
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
  return shown.length > max ? `${shown.slice(0, max)}…` : shown;
}

export function duration(fromIso: string, toIso: string | null): string {
  const ms = (toIso ? new Date(toIso).getTime() : Date.now()) - new Date(fromIso).getTime();
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** Keys on the page that are not typed into a field or a player. */
export function pageKey(e: KeyboardEvent): boolean {
  const t = e.target as HTMLElement | null;
  if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return false;
  return !t || !(t.closest('input, textarea, select, [contenteditable], .ap-player, .ap-wrapper'));
}

/**
 * Recorded text as visible() shows it, with each escape it made marked (a styled span naming the
 * character), so an escape the console made cannot be confused with the same characters typed.
 */
export function Shown({ text, max = 2000 }: { text: string; max?: number }) {
  const parts: Array<string | ReactElement> = [];
  let used = 0;
  let last = 0;
  const cut = (s: string) => {
    const room = max - used;
    used += s.length;
    return s.length > room ? s.slice(0, Math.max(0, room)) : s;
  };
  for (const m of text.matchAll(HIDDEN_ONE)) {
    if (used >= max) break;
    if (m.index > last) parts.push(cut(text.slice(last, m.index)));
    if (used >= max) break;
    const n = m[0].charCodeAt(0);
    parts.push(<span key={m.index} className="ctl" title={`U+${n.toString(16).toUpperCase().padStart(4, '0')}, shown escaped`}>{cut(visible(m[0]))}</span>);
    last = m.index + m[0].length;
  }
  if (used < max && last < text.length) parts.push(cut(text.slice(last)));
  return <>{parts}{used > max ? '…' : null}</>;
}
