// Deciding whether a ref update is a fast-forward (the new commit's history contains the old
// one) from evidence the gateway can check: the commits in the pushed pack, whose ids it computes
// itself from their content, and, for history the pack leaves out because the target already has
// it, the target's own answer to an upload-pack request. Anything unproven counts as a rewrite.

import type { RefUpdate } from './receive-pack.ts';

export { buildUploadPackProbe, probeOptionsFor, UploadPackResponseReader, type ProbeOptions } from './upload-pack.ts';

export interface FastForwardDecision {
  fastForward: boolean;
  /** 'pack': decided from the pushed commits alone; 'target': the target's history was needed. */
  method: 'pack' | 'target';
  detail: string;
}

/**
 * Asks the target for the commits reachable from `tips` but not from `have` (commit id → parent
 * ids), or null when it cannot.
 */
export type AskTarget = (tips: string[], have: string) => Promise<Map<string, string[]> | null>;

interface Walk {
  found: boolean;
  /** Commits reached that none of the known maps describe. */
  exits: string[];
  visited: number;
}

// Breadth-first over parents from `starts`, through commits described by `known`, looking for `goal`.
function walk(starts: string[], goal: string, known: Array<Map<string, string[]>>, seen: Set<string>): Walk {
  const queue = starts.filter((s) => !seen.has(s));
  for (const s of queue) seen.add(s);
  const exits: string[] = [];
  let visited = 0;
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    if (id === goal) return { found: true, exits, visited };
    let parents: string[] | undefined;
    for (const m of known) {
      parents = m.get(id);
      if (parents !== undefined) break;
    }
    if (parents === undefined) {
      exits.push(id);
      continue;
    }
    visited++;
    for (const p of parents) {
      if (!seen.has(p)) {
        seen.add(p);
        queue.push(p);
      }
    }
  }
  return { found: false, exits, visited };
}

function short(id: string): string {
  return id.slice(0, 12);
}

export async function decideFastForward(
  update: RefUpdate,
  pushed: Map<string, string[]>,
  askTarget?: AskTarget,
): Promise<FastForwardDecision> {
  if (update.kind === 'delete') return { fastForward: false, method: 'pack', detail: 'deletion is not a fast-forward' };
  if (update.kind === 'create') return { fastForward: true, method: 'pack', detail: 'ref creation has no previous commit to lose' };
  const { oldId, newId } = update;
  if (oldId === newId) return { fastForward: true, method: 'pack', detail: 'new id equals the current tip' };

  const seen = new Set<string>();
  const first = walk([newId], oldId, [pushed], seen);
  if (first.found) {
    return { fastForward: true, method: 'pack', detail: `current tip ${short(oldId)} reached through ${first.visited} pushed commit(s)` };
  }
  if (first.exits.length === 0) {
    return {
      fastForward: false,
      method: 'pack',
      detail: `new commit's history does not contain the current tip (all ${first.visited} commit(s) of it are in the push)`,
    };
  }
  const exitList = first.exits.length === 1 ? `commit ${short(first.exits[0])} is` : `commits ${first.exits.slice(0, 3).map(short).join(', ')}${first.exits.length > 3 ? ', ...' : ''} are`;
  if (askTarget === undefined) {
    return { fastForward: false, method: 'pack', detail: `history could not be proven: ${exitList} not in the push and the target could not be asked` };
  }
  let history: Map<string, string[]> | null;
  try {
    history = await askTarget(first.exits, oldId);
  } catch (err) {
    return {
      fastForward: false,
      method: 'target',
      detail: `history could not be proven: ${exitList} not in the push and asking the target failed: ${(err as Error).message}`,
    };
  }
  if (history === null) {
    return { fastForward: false, method: 'target', detail: `history could not be proven: ${exitList} not in the push and the target could not answer` };
  }
  // The target sent what is reachable from the exits but not from the current tip; commits it left
  // out are the tip's own ancestors, so the walk ends there without proving anything.
  for (const s of first.exits) seen.delete(s);
  const second = walk(first.exits, oldId, [pushed, history], seen);
  if (second.found) {
    return {
      fastForward: true,
      method: 'target',
      detail: `current tip ${short(oldId)} reached through ${first.visited} pushed and ${second.visited} target commit(s)`,
    };
  }
  return {
    fastForward: false,
    method: 'target',
    detail: `new commit's history does not contain the current tip (checked ${first.visited} pushed and ${second.visited} target commit(s))`,
  };
}
