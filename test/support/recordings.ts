// Reading recordings back through the API, as an auditor would: list sessions, wait for the ones a
// client run started to end, fetch their events.
import assert from 'node:assert/strict';
import type { TestGateway } from './gateway.ts';
import type { EventView, SessionView } from '../../src/cli/format.ts';

export type Data = Record<string, unknown>;
export interface Recording { session: SessionView; events: EventView[] }

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function api<T>(gw: TestGateway, p: string): Promise<T> {
  const res = await fetch(`${gw.url}${p}`, { headers: { authorization: `Bearer ${gw.adminToken}` } });
  const text = await res.text();
  assert.equal(res.status, 200, `GET ${p}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

export async function sessionIds(gw: TestGateway): Promise<Set<string>> {
  return new Set((await api<SessionView[]>(gw, '/api/v1/sessions?limit=10000')).map((s) => s.id));
}

/** Sessions started since `beforeIds` (oldest first), once at least `expected` exist and all have ended. */
export async function newRecordings(gw: TestGateway, beforeIds: Set<string>, expected: number, timeoutMs = 15_000): Promise<Recording[]> {
  const deadline = Date.now() + timeoutMs;
  let fresh: SessionView[] = [];
  for (;;) {
    fresh = (await api<SessionView[]>(gw, '/api/v1/sessions?limit=10000')).filter((s) => !beforeIds.has(s.id));
    if ((fresh.length >= expected && fresh.every((s) => s.endedAt !== null)) || Date.now() > deadline) break;
    await sleep(50);
  }
  fresh.sort((a, b) => (a.id < b.id ? -1 : 1));
  const out: Recording[] = [];
  for (const s of fresh) out.push(await api<Recording>(gw, `/api/v1/sessions/${s.id}`));
  return out;
}

/** Runs `fn` and returns the one session it recorded (ended). */
export async function recordOne<T>(gw: TestGateway, fn: () => Promise<T>): Promise<{ rec: Recording; result: T }> {
  const beforeIds = await sessionIds(gw);
  const result = await fn();
  const recs = await newRecordings(gw, beforeIds, 1);
  assert.equal(recs.length, 1, `exactly one session recorded, got ${recs.length}: ${recs.map((r) => `${r.session.id} ${r.session.endReason}`).join('; ')}`);
  assert.notEqual(recs[0]!.session.endedAt, null, 'the session has ended in the recording');
  return { rec: recs[0]!, result };
}

/** Runs `fn` and returns every session it recorded (at least `min`), merged into one event list. */
export async function recordAll<T>(gw: TestGateway, fn: () => Promise<T>, min = 1): Promise<{ recs: Recording[]; events: EventView[]; result: T }> {
  const beforeIds = await sessionIds(gw);
  const result = await fn();
  const recs = await newRecordings(gw, beforeIds, min);
  assert.ok(recs.length >= min, `at least ${min} session(s) recorded, got ${recs.length}`);
  return { recs, events: recs.flatMap((r) => r.events), result };
}

/** Polls the session(s) started since `beforeIds` until `pred` holds for one of them (open or ended). */
export async function waitForRecording(gw: TestGateway, beforeIds: Set<string>, pred: (r: Recording) => boolean, timeoutMs = 15_000): Promise<Recording> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const fresh = (await api<SessionView[]>(gw, '/api/v1/sessions?limit=10000')).filter((s) => !beforeIds.has(s.id));
    for (const s of fresh) {
      const r = await api<Recording>(gw, `/api/v1/sessions/${s.id}`);
      if (pred(r)) return r;
    }
    if (Date.now() > deadline) throw new Error('the expected recording did not appear in time');
    await sleep(100);
  }
}

export function eventsOf(rec: Recording | EventView[], type: string): EventView[] {
  return (Array.isArray(rec) ? rec : rec.events).filter((e) => e.type === type);
}

export function oneEvent(rec: Recording | EventView[], type: string, pred: (d: Data) => boolean = () => true): Data {
  const found = eventsOf(rec, type).filter((e) => pred(e.data));
  assert.equal(found.length, 1, `exactly one ${type} event expected, got ${found.length}; events:\n${describeEvents(rec)}`);
  return found[0]!.data;
}

/** One line per event for assertion messages (terminal data left out: it is long and unreadable). */
export function describeEvents(rec: Recording | EventView[]): string {
  return (Array.isArray(rec) ? rec : rec.events)
    .map((e) => `${e.seq}:${e.type}${e.type.startsWith('term.') ? '' : ' ' + JSON.stringify(e.data).slice(0, 600)}`).join('\n');
}

/** The events of the session whose application_name is `app`, once it has ended. */
export async function endedSessionEvents(gw: TestGateway, app: string, timeoutMs = 10_000): Promise<EventView[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = (JSON.parse(await gw.cliOk(['sessions', 'list', '--json', '--limit', '1000'])) as SessionView[]).find((x) => x.applicationName === app);
    if (s?.endReason) return (JSON.parse(await gw.cliOk(['sessions', 'show', s.id, '--json'])) as { events: EventView[] }).events;
    if (Date.now() > deadline) throw new Error(`session ${app} did not end`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
