// Protected refs: globs over full ref names. `*` stays within one path component, `**` crosses
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

/** Whether checkProtection will need a fast-forward decision for this update. */
export function needsFastForwardCheck(update: RefUpdate, protect: string[]): boolean {
  return update.kind === 'update' && protectingGlob(update.ref, protect) !== undefined;
}

export const REASON_DELETE = 'protected ref: deletion refused by gatehouse';
export const REASON_NON_FF = 'protected ref: non-fast-forward update refused by gatehouse';
export const REASON_UNVERIFIED = 'protected ref: update refused by gatehouse (fast-forward not verified)';

/**
 * Whether an update may go ahead. Creating a protected ref is allowed; deleting it is not;
 * updating it needs `fastForward === true` (a missing decision counts as a refusal).
 */
export function checkProtection(update: RefUpdate, protect: string[], fastForward?: boolean): { allowed: boolean; reason?: string } {
  if (protectingGlob(update.ref, protect) === undefined) return { allowed: true };
  if (update.kind === 'delete') return { allowed: false, reason: REASON_DELETE };
  if (update.kind === 'create') return { allowed: true };
  if (fastForward === true) return { allowed: true };
  return { allowed: false, reason: fastForward === false ? REASON_NON_FF : REASON_UNVERIFIED };
}
