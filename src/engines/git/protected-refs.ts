// Protected refs: globs over full ref names, and the words a refusal uses. `*` stays within one path component, `**` crosses
// them (`**/` also matches no component at all); a glob not starting with "refs/" names a branch.

import type { RefUpdate } from './receive-pack.ts';

const compiled = new Map<string, RegExp>();

function globRegExp(glob: string): RegExp {
  let re = compiled.get(glob);
  if (re !== undefined) return re;
  const full = glob.startsWith('refs/') ? glob : `refs/heads/${glob}`;
  let src = '^';
  for (let i = 0; i < full.length; i++) {
    const c = full[i];
    if (c === '*') {
      if (full[i + 1] === '*') {
        i++;
        if (full[i + 1] === '/' && (i === 1 || full[i - 2] === '/')) {
          src += '(?:.*/)?'; // a whole "**/" component: zero or more components
          i++;
        } else {
          src += '.*';
        }
      } else {
        src += '[^/]*';
      }
    } else {
      src += c.replace(/[\\^$.|?+()[\]{}]/g, '\\$&');
    }
  }
  re = new RegExp(src + '$');
  if (compiled.size > 1000) compiled.clear(); // globs come from configuration; this only bounds odd callers
  compiled.set(glob, re);
  return re;
}

export function matchesRefGlob(ref: string, glob: string): boolean {
  return globRegExp(glob).test(ref);
}

/** The first glob in `protect` that matches `ref`, if any. */
export function protectingGlob(ref: string, protect: string[]): string | undefined {
  for (const g of protect) if (matchesRefGlob(ref, g)) return g;
  return undefined;
}

/** Whether deciding on this update under protection needs to know whether it fast-forwards. */
export function needsFastForwardCheck(update: RefUpdate, protect: string[]): boolean {
  return update.kind === 'update' && protectingGlob(update.ref, protect) !== undefined;
}

export const REASON_DELETE = 'protected ref: deletion refused by gatehouse';
export const REASON_NON_FF = 'protected ref: non-fast-forward update refused by gatehouse';
export const REASON_UNVERIFIED = 'protected ref: update refused by gatehouse (fast-forward not verified)';

// The decision itself is the policy stage's: the connection's globs are its rule `@protected-refs`
// (src/policy/policy.ts: protectedRefsRule, protectionDecision).
