// The export bundle: a directory a third party can verify with nothing else (docs/bundle.md).
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sha256Hex } from './hash-chain.ts';
import { keyIdOf } from './signing-keys.ts';
import { createPublicKey } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { readTar, tarArchive, type TarFile } from './tar.ts';
import { asciicastFiles } from '../recorder/asciicast.ts';
import {
  checkStartEvent, compareDescription, DESCRIBED_FIELDS, verifySessionEvidence, vouchedDescription,
  type RecordedEvent, type SessionEvidence, type SignedCheckpoint, type SignedSeal, type VerifyOutcome,
} from './verify.ts';

export const BUNDLE_FORMAT = 'gatehouse-session-bundle';
/** 2: the manifest holds only what the seal or the session.start event vouches for, and accounts for every file. */
export const BUNDLE_VERSION = 2;

export interface BundleContent {
  session: Record<string, unknown> & { id: string };
  events: RecordedEvent[];
  checkpoints: SignedCheckpoint[];
  seal: SignedSeal | null;
  keys: Array<{ keyId: string; publicKeyPem: string }>;
}

export interface Manifest {
  format: string;
  version: number;
  session: Record<string, unknown> & { id: string };
  files: Record<string, string>;
}

const MANIFEST_FIELDS = ['format', 'version', 'session', 'files'];
/** The files a bundle may hold besides manifest.json (names are also checked before any is opened). */
const BUNDLE_FILE = /^(events\.jsonl|checkpoints\.jsonl|seal\.json|keys\/[0-9a-f]{32}\.pem|terminal-\d+\.cast)$/;

const jsonl = (rows: unknown[]): string => rows.map((r) => JSON.stringify(r)).join('\n') + (rows.length ? '\n' : '');

export function writeBundle(dir: string, content: BundleContent): Manifest {
  const { files, manifest } = bundleFiles(content);
  mkdirSync(path.join(dir, 'keys'), { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
  return manifest;
}

/**
 * The bundle as one file: a gzipped tar of the directory `<session id>/` that writeBundle would
 * write (what the console downloads). `tar -xzf FILE` then `gatehouse verify <session id>`.
 */
export function bundleArchive(content: BundleContent): Buffer {
  const { files } = bundleFiles(content);
  const top = content.session.id;
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(top) || top.startsWith('.')) throw new Error(`session id ${JSON.stringify(top)} cannot name a bundle directory`);
  const mtime = Math.floor(Date.now() / 1000);
  return gzipSync(tarArchive([
    { name: `${top}/`, dir: true, mtime },
    { name: `${top}/keys/`, dir: true, mtime },
    ...Object.entries(files).map(([name, text]) => ({ name: `${top}/${name}`, data: Buffer.from(text, 'utf8'), mtime })),
  ]));
}

/** Largest bundle archive unpacked by verifyBundleArchive. */
const MAX_ARCHIVE_BYTES = 2 * 1024 * 1024 * 1024;

/**
 * Verifies a bundle archive (bundleArchive's file, or any gzipped or plain tar holding exactly one
 * bundle directory): unpacked, checked for what it holds, into a private temporary directory
 * that is removed afterwards, then verified as verifyBundle verifies a directory.
 */
export function verifyBundleArchive(file: string, trustedKeys: string[] = []): BundleVerification {
  const broken = (problem: string): BundleVerification => ({ ok: false, problem, sealed: false, events: 0, checkpoints: 0, keyIds: [] });
  let entries: TarFile[];
  try {
    const raw = readFileSync(file);
    const tar = raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw, { maxOutputLength: MAX_ARCHIVE_BYTES }) : raw;
    entries = readTar(tar);
  } catch (err) {
    return broken(`${path.basename(file)}: ${(err as Error).message}`);
  }
  const tops = new Set(entries.map((e) => e.name.split('/')[0]!));
  if (tops.size !== 1) return broken(`${path.basename(file)} must hold one bundle directory, it holds ${[...tops].map((t) => JSON.stringify(t)).join(', ') || 'nothing'}`);
  const [top] = [...tops] as [string];
  if (entries.some((e) => e.name === top && !e.dir)) return broken(`${path.basename(file)} holds a file ${JSON.stringify(top)}, not a bundle directory`);
  const tmp = mkdtempSync(path.join(tmpdir(), 'gatehouse-bundle-'));
  try {
    const seen = new Set<string>();
    for (const e of entries) {
      if (seen.has(e.name)) return broken(`${path.basename(file)} holds ${JSON.stringify(e.name)} twice`);
      seen.add(e.name);
      const target = path.join(tmp, e.name);
      if (e.dir) mkdirSync(target, { recursive: true });
      else {
        mkdirSync(path.dirname(target), { recursive: true });
        writeFileSync(target, e.data, { flag: 'wx' });
      }
    }
    return verifyBundle(path.join(tmp, top), trustedKeys);
  } catch (err) {
    return broken(`${path.basename(file)}: ${(err as Error).message}`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The bundle's files (manifest.json included, last) as name → text. */
export function bundleFiles(content: BundleContent): { files: Record<string, string>; manifest: Manifest } {
  const files: Record<string, string> = {
    'events.jsonl': jsonl(content.events),
    'checkpoints.jsonl': jsonl(content.checkpoints),
  };
  if (content.seal) files['seal.json'] = JSON.stringify(content.seal, null, 2) + '\n';
  // Terminal streams as asciicast: derived from the signed events, and re-derived on verify.
  Object.assign(files, asciicastFiles(content.events, castTitle(content.session)));
  for (const k of content.keys) files[`keys/${k.keyId}.pem`] = k.publicKeyPem;
  // Only the fields verify can check against the seal and the session.start event.
  const session = Object.fromEntries(DESCRIBED_FIELDS.filter((f) => f in content.session).map((f) => [f, content.session[f]])) as Manifest['session'];
  const manifest: Manifest = { format: BUNDLE_FORMAT, version: BUNDLE_VERSION, session, files: {} };
  for (const [name, text] of Object.entries(files)) manifest.files[name] = sha256Hex(text);
  return { files: { ...files, 'manifest.json': JSON.stringify(manifest, null, 2) + '\n' }, manifest };
}

function castTitle(session: Record<string, unknown>): string {
  const identity = session.identity as { name?: string } | undefined;
  return `${String(session.id)} ${identity?.name ?? ''}@${String(session.connection ?? '')}`.trim();
}

export interface BundleVerification extends VerifyOutcome { sessionId?: string }

/** Every entry under `dir` as a relative path; directories are walked, anything else is named as it is. */
function filesIn(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(path.join(dir, prefix), { withFileTypes: true })) {
    const name = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...filesIn(dir, name));
    else out.push(name);
  }
  return out;
}

function parseJsonl<T>(text: string, file: string): T[] {
  return text.split('\n').filter((l) => l.trim() !== '').map((line, i) => {
    try { return JSON.parse(line) as T; } catch { throw new Error(`${file} line ${i + 1} is not valid JSON`); }
  });
}

/** Reads and checks a bundle directory; `trustedKeys` (PEM texts) pin who may have signed it. */
export function verifyBundle(dir: string, trustedKeys: string[] = []): BundleVerification {
  const broken = (problem: string): BundleVerification => ({ ok: false, problem, sealed: false, events: 0, checkpoints: 0, keyIds: [] });
  const manifestFile = path.join(dir, 'manifest.json');
  if (!existsSync(manifestFile)) return broken(`${dir} has no manifest.json: not a Gatehouse bundle`);
  let manifest: Manifest;
  try { manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as Manifest; } catch { return broken('manifest.json is not valid JSON'); }
  if (manifest?.format !== BUNDLE_FORMAT) return broken(`unsupported bundle format ${manifest?.format}`);
  if (manifest.version === 1) return broken('bundle format v1 is no longer accepted (its manifest carried fields nothing signed vouches for): export the session again');
  if (manifest.version !== BUNDLE_VERSION) return broken(`unsupported bundle format ${manifest.format} v${manifest.version}`);
  const unknownField = Object.keys(manifest).find((k) => !MANIFEST_FIELDS.includes(k));
  if (unknownField !== undefined) return broken(`manifest.json has a field ${JSON.stringify(unknownField)} that is not part of the bundle format`);
  const sessionId = manifest.session?.id;
  if (typeof sessionId !== 'string') return broken('manifest.json names no session');
  if (typeof manifest.files !== 'object' || manifest.files === null) return broken('manifest.json lists no files');

  // Every file is accounted for: listed in the manifest, and of a kind a bundle holds.
  for (const name of Object.keys(manifest.files)) {
    if (!BUNDLE_FILE.test(name)) return broken(`manifest.json lists ${JSON.stringify(name)}, which is not a file a bundle holds`);
  }
  for (const name of filesIn(dir)) {
    if (name !== 'manifest.json' && !(name in manifest.files)) return broken(`${name} is in the bundle but not in its manifest (an added file)`);
  }

  const read = (name: string): string | null => (existsSync(path.join(dir, name)) ? readFileSync(path.join(dir, name), 'utf8') : null);
  for (const [name, digest] of Object.entries(manifest.files)) {
    const text = read(name);
    if (text === null) return broken(`${name} is listed in the manifest but missing`);
    if (sha256Hex(text) !== digest) return broken(`${name} was modified after export (its SHA-256 differs from the manifest)`);
  }
  let events: RecordedEvent[];
  let checkpoints: SignedCheckpoint[];
  try {
    events = parseJsonl<RecordedEvent>(read('events.jsonl') ?? '', 'events.jsonl');
    checkpoints = parseJsonl<SignedCheckpoint>(read('checkpoints.jsonl') ?? '', 'checkpoints.jsonl');
  } catch (err) {
    return broken((err as Error).message);
  }
  const sealText = read('seal.json');
  let seal: SignedSeal | null = null;
  if (sealText !== null) {
    try { seal = JSON.parse(sealText) as SignedSeal; } catch { return broken('seal.json is not valid JSON'); }
  }
  const keys = new Map<string, string>();
  const keyDir = path.join(dir, 'keys');
  if (existsSync(keyDir)) {
    for (const f of readdirSync(keyDir).filter((x) => x.endsWith('.pem'))) {
      const pem = readFileSync(path.join(keyDir, f), 'utf8');
      let id: string;
      try { id = keyIdOf(createPublicKey(pem)); } catch { return broken(`keys/${f} is not a public key`); }
      // The key id is derived from the key itself, so renaming a file cannot impersonate a key.
      keys.set(id, pem);
    }
  }
  const trusted = trustedKeys.length > 0 ? new Set(trustedKeys.map((pem) => keyIdOf(createPublicKey(pem)))) : undefined;
  const evidence: SessionEvidence = { sessionId, events, checkpoints, seal, keys, trustedKeyIds: trusted };
  const outcome: BundleVerification = { ...verifySessionEvidence(evidence), sessionId };
  if (outcome.ok) {
    // Terminal casts must be exactly what the signed events say, and none may be missing.
    const expected = asciicastFiles(events, castTitle(manifest.session));
    for (const [name, text] of Object.entries(expected)) {
      if (read(name) !== text) return { ...outcome, ok: false, problem: `${name} does not match the recorded terminal events` };
    }
    for (const name of Object.keys(manifest.files)) {
      if (name.endsWith('.cast') && !(name in expected)) return { ...outcome, ok: false, problem: `${name} has no terminal events behind it` };
    }
  }
  if (outcome.ok && outcome.seal) {
    // The manifest's description of the session must be exactly what the seal and the chained
    // session.start event vouch for: a reader of manifest.json learns nothing unverified.
    const started = checkStartEvent(events, outcome.seal);
    if ('problem' in started) return { ...outcome, ok: false, problem: started.problem };
    const mismatch = compareDescription(manifest.session, vouchedDescription(outcome.seal, started.start));
    if (mismatch) return { ...outcome, ok: false, problem: `manifest.json describes the session differently from its seal and session.start event: ${mismatch}` };
  }
  return outcome;
}
