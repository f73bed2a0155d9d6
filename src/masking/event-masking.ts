// Nothing secret in the store: every event is masked before it is hashed into its session's
// chain (the recorder calls maskEventData once per event). Every string in the event's data is
// scanned — statement text, bound parameters, result and COPY samples, exec command lines and
// their output samples, terminal input and output, notices and errors — with the secret catalogue
// (detectors.ts) and the context rules (context-detectors.ts); base64 fields holding raw bytes
// (b64 and raw in base64, a binary parameter in hex) are decoded, scanned and re-encoded. A masked value becomes
// "[masked:DETECTOR]", and the event notes which detector masked how many values in which
// field — never the value: masked: [{ field: 'text', detector: 'aws', count: 1 }].
// This applies to every session, whether or not a mask rule targets its client.
import { DEFAULT_DETECTORS, findSecrets, maskText, type Detector, type Finding } from './detectors.ts';
import { CONTEXT_DETECTORS } from './context-detectors.ts';

/** What the store masks: the catalogue and the context rules. */
export const RECORD_DETECTORS: readonly Detector[] = [...DEFAULT_DETECTORS, ...CONTEXT_DETECTORS];

/**
 * One cheap test before any detector runs (the hot path: most events hold no secret): a string
 * that has none of these key strings (case-insensitive) and no run of 8 digits cannot match any of
 * RECORD_DETECTORS' prefilters (each implies one of these). A plain alternation of literals is
 * about four times faster than the union of the detectors' own prefilters.
 */
export const RECORD_KEYWORDS: readonly string[] = [
  'akia', 'asia', 'abia', 'acca', 'a3t', 'secret', 'aws', 'ghp_', 'gho_', 'ghu_', 'ghs_', 'ghr_', 'github_pat_',
  'glpat-', 'gldt-', 'glrt-', 'glptt-', 'glsoat-', 'glffct-', 'glcbt-', 'xox', 'xapp-', 'hooks.slack', 'k_live_', 'k_test_',
  'aiza', '-----begin', 'eyj', '://', 'passw', 'passphrase', 'pwd', 'token', 'key', 'credential', 'auth', 'identified', 'cookie',
  'sshpass', '-u', '--user', 'mysql', 'mariadb',
];
const PREFILTER = new RegExp(`${RECORD_KEYWORDS.map((k) => k.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&')).join('|')}|\\d{4}[ -]?\\d{4}`, 'i');

/** Whether the store's masking would look at text further (false: it holds nothing to mask). */
export function mayHoldRecordSecrets(text: string): boolean {
  return PREFILTER.test(text);
}

/** One line of an event's note of what was masked. */
export interface MaskedNote {
  field: string;
  detector: string;
  count: number;
}

/** Events that carry nothing typed or returned (hashes, positions, counters): left alone. */
const SKIP_TYPES = new Set(['recording.gap', 'checkpoint', 'term.resize']);
/** Fields holding raw bytes, as base64 or hex. */
const BYTES_FIELDS: Record<string, 'base64' | 'hex'> = { b64: 'base64', raw: 'base64', binary: 'hex' };
/** Content hashes and object ids, never secrets: their hex is left as it is. */
const HEX_ID = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/i;

/** Strings shorter than this cannot hold anything the detectors find (the shortest: pwd=x). */
const MIN_SCAN = 5;
/** A bytea in PostgreSQL's text output: \x, then pairs of hex digits. */
const BYTEA_HEX = /^\\x(?:[0-9a-fA-F]{2})+$/;

/**
 * The event's data with every secret masked, and a `masked` note added; the same object when
 * nothing was found (the common case costs one prefilter test per string). Never changes `data`.
 */
export function maskEventData(type: string, data: unknown): unknown {
  if (SKIP_TYPES.has(type) || data === null || typeof data !== 'object') return data;
  const notes = new Map<string, MaskedNote>();
  const out = walk(maskSecretColumns(data as Record<string, unknown>, notes), '', notes);
  if (notes.size === 0) return data;
  const masked = out as Record<string, unknown>;
  if (Array.isArray(masked)) return masked; // not a shape any engine records
  const earlier = Array.isArray(masked.masked) ? masked.masked as unknown[] : [];
  return { ...masked, masked: [...earlier, ...notes.values()] };
}

/** Result columns whose name says they hold secrets (password, password_hash, api_key, totp_secret…), not facts about them (password_changed_at, token_type). */
const SECRET_COLUMN = /(?:password|passwd|^pwd$|passphrase|secret|token|api_?key|access_?key|private_?key|credentials?|auth_?key|session_?key|^otp|_otp)/i;
const NOT_SECRET_COLUMN = /(?:_|^)(?:count|id|ids|at|on|type|kind|expires?|expiry|expiration|len|length|hint|policy|version|name|set|changed|updated|created|reset|required|enabled|valid|used|last_used|scope|scopes|prefix)$/i;

/** A result whose columns are named like secrets: their sample cells are masked whole (secret_column). */
function maskSecretColumns(data: Record<string, unknown>, notes: Map<string, MaskedNote>): Record<string, unknown> {
  const { columns, sample } = data;
  if (!Array.isArray(columns) || !Array.isArray(sample) || sample.length === 0) return data;
  const secret: number[] = [];
  columns.forEach((c, i) => { if (typeof c === 'string' && SECRET_COLUMN.test(c) && !NOT_SECRET_COLUMN.test(c)) secret.push(i); });
  if (secret.length === 0) return data;
  const rows = sample.map((row: unknown) => {
    if (!Array.isArray(row)) return row;
    const copy = row.slice();
    for (const i of secret) {
      if (copy[i] === null || copy[i] === undefined) continue;
      copy[i] = '[masked:secret_column]';
      const field = `sample[*][${i}]`;
      const n = notes.get(`${field}\u0000secret_column`);
      if (n) n.count++;
      else notes.set(`${field}\u0000secret_column`, { field, detector: 'secret_column', count: 1 });
    }
    return copy;
  });
  return { ...data, sample: rows };
}

function note(notes: Map<string, MaskedNote>, field: string, findings: Finding[]): void {
  for (const f of findings) {
    const k = `${field}\u0000${f.detector}`;
    const n = notes.get(k);
    if (n) n.count++;
    else notes.set(k, { field, detector: f.detector, count: 1 });
  }
}

/** Sample rows are noted by column (sample[*][2]), not one line per cell. */
function childPath(path: string, key: string | number, parentIsSample: boolean): string {
  if (typeof key === 'number') return `${path}[${parentIsSample ? '*' : key}]`;
  return path ? `${path}.${key}` : key;
}

function walk(value: unknown, path: string, notes: Map<string, MaskedNote>, key = ''): unknown {
  if (typeof value === 'string') return maskString(value, path, notes, Object.hasOwn(BYTES_FIELDS, key) ? BYTES_FIELDS[key]! : null);
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    const sample = key === 'sample' || key === 'rows';
    let copy: unknown[] | null = null;
    for (let i = 0; i < value.length; i++) {
      const v = value[i];
      const m = walk(v, childPath(path, i, sample), notes, sample ? '' : key);
      if (m !== v) { copy ??= value.slice(); copy[i] = m; }
    }
    return copy ?? value;
  }
  if (Buffer.isBuffer(value) || ArrayBuffer.isView(value)) return value; // JSON would not keep them either
  let copy: Record<string, unknown> | null = null;
  // An output sample that is not UTF-8 is kept as base64 ({ sample, encoding: 'base64' }).
  const base64Sample = (value as Record<string, unknown>).encoding === 'base64';
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (k === 'masked') continue;
    const m = walk(v, childPath(path, k, false), notes, k === 'sample' && base64Sample ? 'b64' : k);
    if (m !== v) { copy ??= { ...(value as Record<string, unknown>) }; copy[k] = m; }
  }
  return copy ?? value;
}

function maskString(s: string, field: string, notes: Map<string, MaskedNote>, bytes: 'base64' | 'hex' | null): string {
  if (s.length < MIN_SCAN) return s;
  if (bytes) {
    // Raw bytes: bytes map one to one onto latin1 characters, and every detector is ASCII.
    const valid = bytes === 'hex' ? /^(?:[0-9a-fA-F]{2})*$/.test(s) : /^[A-Za-z0-9+/]*={0,2}$/.test(s);
    if (!valid) return maskString(s, field, notes, null);
    const text = Buffer.from(s, bytes).toString('latin1');
    if (!PREFILTER.test(text)) return s;
    const findings = findSecrets(text, RECORD_DETECTORS);
    if (findings.length === 0) return s;
    note(notes, field, findings);
    return Buffer.from(maskText(text, findings, 'redact')!, 'latin1').toString(bytes);
  }
  // A bytea value as PostgreSQL writes it in text format (\x and hex digits): its bytes are read.
  if (s.charCodeAt(0) === 92 && s.charCodeAt(1) === 120 && s.length >= 12 && BYTEA_HEX.test(s)) {
    const masked = maskString(s.slice(2), field, notes, 'hex');
    return masked === s.slice(2) ? s : `\\x${masked}`;
  }
  if (!PREFILTER.test(s) || HEX_ID.test(s)) return s;
  const findings = findSecrets(s, RECORD_DETECTORS);
  if (findings.length === 0) return s;
  note(notes, field, findings);
  return maskText(s, findings, 'redact')!;
}
