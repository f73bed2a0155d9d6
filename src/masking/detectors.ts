// Secret detectors, in the style of gitleaks and secretlint: a catalogue of patterns for cloud
// keys, VCS and chat tokens, private key blocks, JWTs, passwords in URLs and connection strings,
// card numbers (with a Luhn check), plus operator-defined regexes. Pure: no sockets, no state.
//
// Bounded work: every built-in pattern is linear in its input — each starts at a token boundary
// (a lookbehind), uses bounded quantifiers over classes that exclude what follows them, and has no
// quantified group that holds another quantifier or an alternation of overlapping branches, so a
// failed attempt costs at most the pattern's longest match. Regexes run over slices of at most
// SLICE_CHARS (with an overlap longer than any match), so even an operator's pattern that is
// worse than linear is bounded per slice; operator patterns are also linted (checkPatternSafety).
// Private key blocks are found procedurally (one indexOf per header), not by a lazy regex.
import { createHmac, hkdfSync } from 'node:crypto';

/** Where a secret is in a text: [start, end) in UTF-16 code units, and the detector that found it. */
export interface Finding {
  detector: string;
  start: number;
  end: number;
}

export interface Detector {
  readonly name: string;
  readonly description: string;
  /** Cheap test: a text it does not match holds nothing this detector finds (case-insensitive). */
  readonly prefilter: RegExp;
  /** Pushes the detector's findings in `text` (any order; overlaps are merged by findSecrets). */
  find(text: string, out: Finding[]): void;
}

/** Regex detectors see slices of at most this many characters… */
export const SLICE_CHARS = 256 * 1024;
/** …overlapping by this much (longer than any built-in match). */
export const SLICE_OVERLAP = 16 * 1024;
/** Longest private key block looked for (an RSA 8192 key in PEM is about 6.5 KB). */
export const PRIVATE_KEY_MAX_CHARS = 16 * 1024;

interface RegexSpec {
  name: string;
  description: string;
  prefilter: RegExp;
  pattern: RegExp;
  /** Capture groups holding the secret (the first that matched is masked); none: the whole match. */
  groups?: number[];
  /** Rejects a candidate (the masked text, the whole match). */
  validate?: (secret: string, match: string) => boolean;
}

function regexDetector(spec: RegexSpec): Detector {
  const flags = new Set(spec.pattern.flags.split(''));
  flags.add('g'); flags.add('d');
  const re = new RegExp(spec.pattern.source, [...flags].join(''));
  return {
    name: spec.name,
    description: spec.description,
    prefilter: spec.prefilter,
    find(text, out) {
      forEachSlice(text, (slice, offset, ownEnd) => {
        re.lastIndex = 0;
        for (let m = re.exec(slice); m !== null; m = re.exec(slice)) {
          if (m[0].length === 0) { re.lastIndex++; continue; }
          if (m.index >= ownEnd) break; // the next slice starts here and finds it
          let span: [number, number] = m.indices![0]!;
          if (spec.groups) {
            const g = spec.groups.find((i) => m.indices![i] !== undefined);
            if (g === undefined) continue;
            span = m.indices![g]!;
          }
          const secret = slice.slice(span[0], span[1]);
          if (spec.validate && !spec.validate(secret, m[0])) continue;
          out.push({ detector: spec.name, start: offset + span[0], end: offset + span[1] });
        }
      });
    },
  };
}

/** Calls fn on overlapping slices; ownEnd: matches starting at or after it belong to the next slice. */
function forEachSlice(text: string, fn: (slice: string, offset: number, ownEnd: number) => void): void {
  if (text.length <= SLICE_CHARS) { fn(text, 0, text.length); return; }
  for (let offset = 0; offset < text.length; offset += SLICE_CHARS - SLICE_OVERLAP) {
    const last = offset + SLICE_CHARS >= text.length;
    fn(text.slice(offset, offset + SLICE_CHARS), offset, last ? SLICE_CHARS : SLICE_CHARS - SLICE_OVERLAP);
    if (last) break;
  }
}

/** A value that is itself a placeholder or an earlier mask, not a secret. */
function isPlaceholder(v: string): boolean {
  return /^(?:\$\{?[A-Za-z_]|%[sdv]$|\?$|\*+$|x+$|\[(?:masked|hash|hidden)|:[A-Za-z_0-9]+$|<[^>]*>$|\{\{)/i.test(v);
}

// ---- the catalogue ----

const aws: Detector = (() => {
  const keyId = regexDetector({
    name: 'aws', description: 'AWS access key id (AKIA…, ASIA…)',
    prefilter: /A(?:KIA|SIA|BIA|CCA|3T)/,
    pattern: /(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])/,
  });
  const secret = regexDetector({
    name: 'aws', description: 'AWS secret access key after its name',
    prefilter: /secret_?(?:access_?)?key|aws_?secret/i,
    pattern: /(?<![A-Za-z0-9])(?:aws_?)?secret_?(?:access_?)?key["']?(?:[ \t]{0,8}(?:[:=]|=>)[ \t]{0,8}|[ \t]{1,8})["']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])/i,
    groups: [1],
  });
  return {
    name: 'aws', description: 'AWS access key ids, and secret access keys named as such',
    prefilter: /A(?:KIA|SIA|BIA|CCA|3T)|secret_?(?:access_?)?key|aws_?secret/i,
    find(text, out) {
      if (keyId.prefilter.test(text)) keyId.find(text, out);
      if (secret.prefilter.test(text)) secret.find(text, out);
    },
  };
})();

const github = regexDetector({
  name: 'github', description: 'GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)',
  prefilter: /gh[pousr]_|github_pat_/,
  pattern: /(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{59,251})(?![A-Za-z0-9_])/,
});

const gitlab = regexDetector({
  name: 'gitlab', description: 'GitLab tokens (glpat-, and deploy/runner/feed tokens)',
  prefilter: /gl(?:pat|dt|rt|ptt|soat|ffct|cbt)-/,
  pattern: /(?<![A-Za-z0-9_-])gl(?:pat|dt|rt|ptt|soat|ffct|cbt)-[A-Za-z0-9_-]{20,64}(?:\.[0-9a-z]{2}\.[0-9a-z]{9})?(?![A-Za-z0-9_-])/,
});

const slack = (() => {
  const token = regexDetector({
    name: 'slack', description: 'Slack tokens (xoxb-, xoxp-, xoxa-, xoxr-, xoxs-, xapp-)',
    prefilter: /xox[abposr]-|xapp-/,
    pattern: /(?<![A-Za-z0-9_-])(?:xox[abposr]|xapp)-[0-9A-Za-z][0-9A-Za-z-]{8,250}(?![A-Za-z0-9_-])/,
    validate: (s) => /\d/.test(s) && s.split('-').length >= 3,
  });
  const hook = regexDetector({
    name: 'slack', description: 'Slack incoming webhook URLs',
    prefilter: /hooks\.slack\.com/i,
    pattern: /(?:https?:\/\/)?hooks\.slack\.com\/(?:services|workflows|triggers)\/[A-Za-z0-9+/_-]{20,250}/i,
  });
  return {
    name: 'slack', description: 'Slack tokens and webhook URLs',
    prefilter: /xox[abposr]-|xapp-|hooks\.slack\.com/i,
    find(text, out) {
      if (token.prefilter.test(text)) token.find(text, out);
      if (hook.prefilter.test(text)) hook.find(text, out);
    },
  } satisfies Detector;
})();

const stripe = regexDetector({
  name: 'stripe', description: 'Stripe secret and restricted keys (sk_live_, rk_live_, and _test_)',
  prefilter: /[sr]k_(?:live|test)_/,
  pattern: /(?<![A-Za-z0-9_])[sr]k_(?:live|test)_[0-9A-Za-z]{16,247}(?![A-Za-z0-9_])/,
});

const googleApi = regexDetector({
  name: 'google_api', description: 'Google API keys (AIza…)',
  prefilter: /AIza/,
  pattern: /(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])/,
});

const BEGIN_KEY = /-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----/g;
const END_KEY = /-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----/y;
/** A line of a key block's body: base64, or an RFC 1421 header (Proc-Type: …), or blank. */
const KEY_LINE = /[ \t]*(?:[A-Za-z0-9+/=]{1,200}|[A-Za-z][A-Za-z0-9-]{0,39}:[^\r\n]{0,200})?[ \t]*(?:\r?\n|$)/y;

const privateKey: Detector = {
  name: 'private_key', description: 'Private key blocks (PEM: RSA, EC, DSA, OPENSSH, ENCRYPTED, PKCS#8; PGP private key blocks)',
  prefilter: /-----BEGIN/,
  find(text, out) {
    BEGIN_KEY.lastIndex = 0;
    let nextEnd = -2; // position of the next '-----END' after the last header (-1: none)
    for (let m = BEGIN_KEY.exec(text); m !== null; m = BEGIN_KEY.exec(text)) {
      const start = m.index;
      const bodyStart = start + m[0].length;
      if (nextEnd !== -1 && nextEnd < bodyStart) nextEnd = text.indexOf('-----END', bodyStart);
      let end = -1;
      if (nextEnd >= 0 && nextEnd - start <= PRIVATE_KEY_MAX_CHARS) {
        END_KEY.lastIndex = nextEnd;
        const e = END_KEY.exec(text);
        if (e) end = nextEnd + e[0].length;
      }
      if (end < 0) end = keyBodyEnd(text, bodyStart, start + PRIVATE_KEY_MAX_CHARS); // cut short: mask what is there
      out.push({ detector: 'private_key', start, end });
      BEGIN_KEY.lastIndex = Math.max(end, bodyStart);
    }
  },
};

/** Where the lines that look like a key block's body end (a block cut short, with no END line). */
function keyBodyEnd(text: string, from: number, limit: number): number {
  let at = from;
  const stop = Math.min(text.length, limit);
  while (at < stop) {
    KEY_LINE.lastIndex = at;
    const m = KEY_LINE.exec(text);
    if (!m || m[0].length === 0) break;
    at += m[0].length;
  }
  return Math.min(at, stop);
}

const jwt = regexDetector({
  name: 'jwt', description: 'JSON Web Tokens (three base64url parts; the header decodes to JSON naming an alg)',
  prefilter: /eyJ/,
  pattern: /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{6,1500}\.[A-Za-z0-9_-]{2,6000}\.[A-Za-z0-9_-]{0,1500}(?![A-Za-z0-9_-])/,
  validate: (token) => {
    try {
      const header = JSON.parse(Buffer.from(token.slice(0, token.indexOf('.')), 'base64url').toString('utf8')) as unknown;
      return typeof header === 'object' && header !== null && typeof (header as { alg?: unknown }).alg === 'string';
    } catch {
      return false;
    }
  },
});

const urlCredentials = (() => {
  const url = regexDetector({
    name: 'url_credentials', description: 'Passwords in URLs (scheme://user:password@host)',
    prefilter: /:\/\//,
    pattern: /(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{1,30}:\/\/[^\s:/?#@'"<>]{0,256}:([^\s/?#'"<>]{1,256})@(?=[A-Za-z0-9[._-])/,
    groups: [1],
    validate: (s) => !isPlaceholder(s),
  });
  const kv = regexDetector({
    name: 'url_credentials', description: 'Passwords in connection strings and settings (password=…, pwd=…, "password": "…")',
    prefilter: /passw(?:or)?d|pwd|passphrase/i,
    pattern: /(?<![A-Za-z0-9_])(?:password|passwd|pwd|passphrase)["']?[ \t]{0,4}[=:][ \t]{0,4}(?:'([^'\r\n]{1,256})'|"([^"\r\n]{1,256})"|([^\s;&'"<>,)]{1,256}))/i,
    groups: [1, 2, 3],
    // PWD=/home/x is the shell's working directory, not a password.
    validate: (s, match) => !isPlaceholder(s) && !(/^pwd/i.test(match) && /^[/~.]/.test(s)),
  });
  return {
    name: 'url_credentials', description: 'Passwords in URLs and connection strings',
    prefilter: /:\/\/|passw(?:or)?d|pwd|passphrase/i,
    find(text, out) {
      if (url.prefilter.test(text)) url.find(text, out);
      if (kv.prefilter.test(text)) kv.find(text, out);
    },
  } satisfies Detector;
})();

/** Luhn checksum over a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (double) { d *= 2; if (d > 9) d -= 9; }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

/** Issuer prefixes and lengths of the card networks (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro). */
function cardIssuerValid(d: string): boolean {
  const n = d.length;
  const p2 = Number(d.slice(0, 2));
  const p3 = Number(d.slice(0, 3));
  const p4 = Number(d.slice(0, 4));
  if (d[0] === '4') return n === 13 || n === 16 || n === 19;
  if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return n === 16;
  if (p2 === 34 || p2 === 37) return n === 15;
  if (p4 === 6011 || p2 === 65 || (p3 >= 644 && p3 <= 649)) return n >= 16 && n <= 19;
  if (p4 >= 3528 && p4 <= 3589) return n >= 16 && n <= 19;
  if ((p3 >= 300 && p3 <= 305) || p2 === 36 || p2 === 38 || p2 === 39) return n >= 14 && n <= 19;
  if (p2 === 62) return n >= 16 && n <= 19;
  if (p2 === 50 || (p2 >= 56 && p2 <= 58) || p2 === 67) return n >= 13 && n <= 19;
  return false;
}

const creditCard = regexDetector({
  name: 'credit_card', description: 'Payment card numbers (13–19 digits, spaces or dashes between groups; issuer prefix and Luhn check)',
  prefilter: /\d{4}[ -]?\d{4}/,
  pattern: /(?<![0-9A-Za-z_.,-])[2-6]\d{3}(?:[ -]?\d){9,15}(?![0-9A-Za-z_]|[.,]\d)/,
  validate: (s) => {
    const digits = s.replace(/[ -]/g, '');
    if (digits.length < 13 || digits.length > 19) return false;
    const seps = s.replace(/[0-9]/g, '');
    if (seps.length > 0 && (new Set(seps).size > 1 || /[ -]{2}/.test(s) || seps.length > 4)) return false;
    if (/^(\d)\1+$/.test(digits)) return false;
    return cardIssuerValid(digits) && luhnValid(digits);
  },
});

/** Every built-in detector, by name. */
export const BUILTIN_DETECTORS: Readonly<Record<string, Detector>> = {
  aws, github, gitlab, slack, stripe, google_api: googleApi, private_key: privateKey, jwt, url_credentials: urlCredentials, credit_card: creditCard,
};

export const BUILTIN_DETECTOR_NAMES = Object.keys(BUILTIN_DETECTORS);

/** The built-in catalogue, every detector on. */
export const DEFAULT_DETECTORS: readonly Detector[] = Object.values(BUILTIN_DETECTORS);

// ---- operator-defined detectors ----

export interface CustomDetectorSpec {
  name: string;
  /** A JavaScript regular expression source. */
  pattern: string;
  /** Any of i, m, s, u. */
  flags?: string;
  /** Capture group holding the secret (default: the whole match). */
  group?: number;
  description?: string;
}

/**
 * Why an operator's pattern may take more than linear time, or null. A backtracking engine runs
 * JavaScript regexes, so patterns are held to shapes that stay linear: no backreferences, no
 * lookbehind holding a quantifier, and no repeated group (*, +, {n,m} with m > 1) that holds a
 * quantifier or an alternation (the (a+)+ and (a|a)* shapes). Conservative: some safe patterns are
 * refused too; rewrite them with character classes.
 */
export function checkPatternSafety(source: string): string | null {
  if (source.length > 1000) return 'pattern longer than 1000 characters';
  if (/\\[1-9]|\\k</.test(source)) return 'backreferences are not allowed';
  // Walk the groups: for each, whether it holds a quantifier or alternation, and how it is quantified.
  const stack: Array<{ risky: boolean; lookbehind: boolean }> = [];
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (c === '\\') { i++; continue; }
    if (inClass) { if (c === ']') inClass = false; continue; }
    if (c === '[') { inClass = true; continue; }
    if (c === '(') {
      stack.push({ risky: false, lookbehind: source.startsWith('?<=', i + 1) || source.startsWith('?<!', i + 1) });
      const prefix = /^\?(?::|=|!|<=|<!|<[A-Za-z_][A-Za-z0-9_]*>)/.exec(source.slice(i + 1, i + 40));
      if (prefix) i += prefix[0].length;
      continue;
    }
    const top = stack.at(-1);
    if (c === '|') { if (top) top.risky = true; continue; }
    const quant = quantifierAt(source, i);
    if (quant) {
      if (top?.lookbehind && quant.repeats) return 'quantifiers inside a lookbehind are not allowed';
      if (top && (quant.repeats || quant.optional)) top.risky = true;
      i += quant.length - 1;
      continue;
    }
    if (c === ')') {
      const group = stack.pop();
      if (!group) return 'unbalanced parenthesis';
      const after = quantifierAt(source, i + 1);
      if (after?.repeats && group.risky) return 'a repeated group holds a quantifier or an alternation (catastrophic backtracking)';
      const parent = stack.at(-1);
      if (parent && group.risky) parent.risky = true;
    }
  }
  if (stack.length > 0) return 'unbalanced parenthesis';
  try { new RegExp(source, 'u'); } catch (err) { return (err as Error).message; }
  return null;
}

function quantifierAt(source: string, i: number): { length: number; repeats: boolean; optional: boolean } | null {
  const c = source[i];
  let length = 0;
  let repeats = false;
  if (c === '*' || c === '+') { length = 1; repeats = true; }
  else if (c === '?') { length = 1; }
  else if (c === '{') {
    const m = /^\{(\d+)(,(\d*))?\}/.exec(source.slice(i, i + 24));
    if (!m) return null;
    length = m[0].length;
    const max = m[2] === undefined ? Number(m[1]) : m[3] === '' ? Infinity : Number(m[3]);
    repeats = max > 1;
  } else return null;
  if (source[i + length] === '?') length++; // lazy
  return { length, repeats, optional: !repeats };
}

/** An operator's detector; throws when the pattern is refused (see checkPatternSafety). */
export function customDetector(spec: CustomDetectorSpec): Detector {
  if (!/^[a-z][a-z0-9_-]{0,63}$/i.test(spec.name)) throw new Error(`detector name ${JSON.stringify(spec.name)}: letters, digits, _ and - only`);
  if (BUILTIN_DETECTORS[spec.name]) throw new Error(`detector name ${spec.name} is a built-in detector's`);
  const flags = spec.flags ?? '';
  if (!/^[imsu]*$/.test(flags)) throw new Error(`detector ${spec.name}: flags may be i, m, s, u`);
  const problem = checkPatternSafety(spec.pattern);
  if (problem) throw new Error(`detector ${spec.name}: ${problem}`);
  const pattern = new RegExp(spec.pattern, flags);
  return regexDetector({
    name: spec.name, description: spec.description ?? `operator pattern /${spec.pattern}/${flags}`,
    prefilter: /[\s\S]/, pattern, ...(spec.group ? { groups: [spec.group] } : {}),
  });
}

/**
 * The detectors named (built-in names, or names of `custom` specs); every built-in one when
 * `names` is undefined. Throws on an unknown name.
 */
export function selectDetectors(names?: readonly string[], custom: readonly CustomDetectorSpec[] = []): Detector[] {
  const customs = new Map(custom.map((s) => [s.name, customDetector(s)]));
  if (names === undefined) return [...DEFAULT_DETECTORS, ...customs.values()];
  return names.map((n) => {
    const d = BUILTIN_DETECTORS[n] ?? customs.get(n);
    if (!d) throw new Error(`unknown detector ${JSON.stringify(n)} (built-in: ${BUILTIN_DETECTOR_NAMES.join(', ')})`);
    return d;
  });
}

// ---- finding and masking ----

/** Whether any of the detectors could find something in text (a fast test; false means none will). */
export function mayHoldSecrets(text: string, detectors: readonly Detector[] = DEFAULT_DETECTORS): boolean {
  if (detectors === DEFAULT_DETECTORS) return DEFAULT_PREFILTER.test(text);
  return detectors.some((d) => d.prefilter.test(text));
}

const DEFAULT_PREFILTER = new RegExp(DEFAULT_DETECTORS.map((d) => `(?:${d.prefilter.source})`).join('|'), 'i');

/**
 * The secrets in text, sorted by start, overlapping findings merged (the merged one is named by
 * the detector whose finding starts first; at the same start, the longer).
 */
export function findSecrets(text: string, detectors: readonly Detector[] = DEFAULT_DETECTORS): Finding[] {
  if (text.length === 0) return [];
  // Terminal colours cut tokens: grep --color prints ESC[01;31mESC[K before a match, whose final
  // byte K is a letter glued to the secret (no token boundary), and highlighters colour a token in
  // pieces. Detectors read the text as a terminal shows it; findings are mapped back.
  if (text.indexOf('\x1b') >= 0) return findThroughEscapes(text, detectors);
  return findIn(text, detectors);
}

/** ESC [ parameters intermediates final (CSI), or ESC and one byte (ESC ( B counts its charset byte too). */
const ESCAPE = /\x1b(?:\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?|[()*+][\x20-\x7e]?|[\x40-\x5a\x5c\x5e-\x7e])/g;

function findThroughEscapes(text: string, detectors: readonly Detector[]): Finding[] {
  // at[i]: where the i-th shown character is in text (at[shown.length]: text.length).
  const at: number[] = [];
  let shown = '';
  let from = 0;
  ESCAPE.lastIndex = 0;
  for (let m = ESCAPE.exec(text); m; m = ESCAPE.exec(text)) {
    for (let i = from; i < m.index; i++) at.push(i);
    shown += text.slice(from, m.index);
    from = m.index + m[0].length;
  }
  if (from === 0) return findIn(text, detectors);
  for (let i = from; i < text.length; i++) at.push(i);
  shown += text.slice(from);
  at.push(text.length);
  // A finding spans the escapes inside it (they are masked with it), not those around it.
  return findIn(shown, detectors).map((f) => ({ ...f, start: at[f.start]!, end: f.end > 0 ? at[f.end - 1]! + 1 : at[0]! }));
}

function findIn(text: string, detectors: readonly Detector[]): Finding[] {
  if (text.length === 0) return [];
  const raw: Finding[] = [];
  for (const d of detectors) if (d.prefilter.test(text)) d.find(text, raw);
  if (raw.length <= 1) return raw;
  raw.sort((a, b) => a.start - b.start || b.end - a.end);
  const merged: Finding[] = [raw[0]!];
  for (let i = 1; i < raw.length; i++) {
    const f = raw[i]!;
    const last = merged.at(-1)!;
    if (f.start < last.end) { if (f.end > last.end) last.end = f.end; }
    else merged.push({ ...f });
  }
  return merged;
}

export type MaskStyle = 'redact' | 'partial' | 'hash' | 'null';
export const MASK_STYLES: readonly MaskStyle[] = ['redact', 'partial', 'hash', 'null'];

export interface MaskOptions {
  /** Key for the hash style (see maskingKey); required for it. */
  key?: Buffer;
}

/**
 * Derives the key of the hash style from the gateway's key material (its secret key, or the
 * private key of its signing key): HKDF-SHA256 with a label of its own, so the masking key is never
 * stored and says nothing of the material it came from.
 */
export function maskingKey(material: Buffer | string): Buffer {
  return Buffer.from(hkdfSync('sha256', typeof material === 'string' ? Buffer.from(material, 'utf8') : material, Buffer.alloc(0), 'gatehouse masking hmac v1', 32));
}

/**
 * How one value is masked: redact → "[masked:LABEL]" (or "[masked]"), partial → '*' for all but
 * the last 4 characters (all when shorter than 8), hash → "[hash:LABEL:HMAC-16-hex]" (equal values
 * mask equally under one key), null → null.
 */
export function maskValue(value: string, style: MaskStyle, label = '', opts: MaskOptions = {}): string | null {
  switch (style) {
    case 'null': return null;
    case 'partial': {
      const keep = value.length >= 8 ? 4 : 0;
      return '*'.repeat(Math.min(value.length - keep, 64)) + value.slice(value.length - keep);
    }
    case 'hash': {
      if (!opts.key) throw new Error('the hash mask style needs a key (maskingKey)');
      const mac = createHmac('sha256', opts.key).update(value, 'utf8').digest('hex').slice(0, 16);
      return label ? `[hash:${label}:${mac}]` : `[hash:${mac}]`;
    }
    default: return label ? `[masked:${label}]` : '[masked]';
  }
}

/**
 * text with each finding masked in `style` (findings sorted and not overlapping, as findSecrets
 * returns them). Style null makes the whole text null when there is any finding.
 */
export function maskText(text: string, findings: readonly Finding[], style: MaskStyle, opts: MaskOptions = {}): string | null {
  if (findings.length === 0) return text;
  if (style === 'null') return null;
  let out = '';
  let at = 0;
  for (const f of findings) {
    if (f.start < at) continue;
    out += text.slice(at, f.start) + maskValue(text.slice(f.start, f.end), style, f.detector, opts)!;
    at = f.end;
  }
  return out + text.slice(at);
}

/** Counts per detector, for a record of what was masked (never the values). */
export function countByDetector(findings: readonly Finding[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const f of findings) counts.set(f.detector, (counts.get(f.detector) ?? 0) + 1);
  return counts;
}

// ---- streaming ----

export interface StreamMaskerOptions {
  detectors?: readonly Detector[];
  style?: Exclude<MaskStyle, 'null'>;
  /** A style per detector (a mask plan's: the rule that lists it decides); others get `style`. */
  styles?: ReadonlyMap<string, Exclude<MaskStyle, 'null'>>;
  key?: Buffer;
  /** Most characters ever held back (default PRIVATE_KEY_MAX_CHARS): the bound on delay. */
  maxHold?: number;
  /** Called for each finding as it is emitted (detector names only: never the value). */
  onFinding?: (detector: string) => void;
}

/** The longest token held back while it might be the start of a secret. */
const MAX_TOKEN_HOLD = 9000;
/** Text already emitted that later scans still see, so a secret named by a key word before it (aws_secret_access_key = …) is caught. */
const CONTEXT_CHARS = 256;
/** Digit groups at the end that may be the first groups of a card number. */
const CARD_TAIL = /(?<![0-9A-Za-z_.,-])[2-6]\d{3}(?:[ -]\d{1,6}){0,4}[ -]?$/;

/**
 * Masks a stream of text chunks (a TCP stream, a terminal's writes) so that a secret split across
 * chunk edges is still caught: each feed() returns the masked text that is safe to emit, holding
 * back a bounded tail — the last whitespace-delimited token (it may be the start of a token), digit
 * groups that may begin a card number, or a private key block not yet ended — at most maxHold
 * characters. The last CONTEXT_CHARS characters emitted are scanned again with the next chunk (as
 * context only), so a key word before a held value still counts. flush() emits what is held, masked;
 * engines call it when the stream pauses (a timer of a few milliseconds) and at its end, so the
 * delay is bounded in time as well as in size.
 */
export class StreamMasker {
  private readonly detectors: readonly Detector[];
  private readonly style: Exclude<MaskStyle, 'null'>;
  private readonly styles: ReadonlyMap<string, Exclude<MaskStyle, 'null'>> | undefined;
  private readonly opts: MaskOptions;
  private readonly maxHold: number;
  private readonly onFinding: ((detector: string) => void) | undefined;
  private carry = '';
  private context = '';
  /** Findings emitted so far, by detector. */
  readonly counts = new Map<string, number>();

  constructor(options: StreamMaskerOptions = {}) {
    this.detectors = options.detectors ?? DEFAULT_DETECTORS;
    this.style = options.style ?? 'redact';
    this.styles = options.styles && options.styles.size > 0 ? options.styles : undefined;
    this.opts = options.key ? { key: options.key } : {};
    this.maxHold = options.maxHold ?? PRIVATE_KEY_MAX_CHARS;
    this.onFinding = options.onFinding;
  }

  /** Characters held back, waiting for the next chunk or flush(). */
  get pending(): number { return this.carry.length; }

  feed(chunk: string): string {
    return this.step(chunk, false);
  }

  /** Emits everything held, masked. */
  flush(): string {
    return this.step('', true);
  }

  /** Byte streams: bytes map one to one onto latin1 characters (detectors are ASCII), so no decoder is needed. */
  feedBytes(chunk: Buffer): Buffer {
    return Buffer.from(this.feed(chunk.toString('latin1')), 'latin1');
  }

  flushBytes(): Buffer {
    return Buffer.from(this.flush(), 'latin1');
  }

  private step(chunk: string, final: boolean): string {
    const base = this.context.length;
    const text = this.context + this.carry + chunk;
    if (text.length === base) return '';
    const findings: Finding[] = [];
    if (mayHoldSecrets(text, this.detectors)) {
      for (const f of findSecrets(text, this.detectors)) {
        if (f.end <= base) continue; // emitted already (masked then)
        findings.push({ detector: f.detector, start: Math.max(f.start, base), end: f.end });
      }
    }
    // A pause (flush) cuts a token that begins like a secret (ghp_…, AKIA…, password=…, or the value
    // after aws_secret_access_key = ): what came of it is masked, and the rest, when it comes, is
    // found with this text as context — rather than its first part going out in clear.
    if (final) {
      const cut = cutSecret(text, base);
      if (cut && !findings.some((f) => f.end > cut.start)) findings.push(cut);
    }
    let hold = final ? text.length : Math.max(base, holdFrom(text, this.maxHold));
    // A finding across the cut: hold it whole, unless that would hold more than allowed.
    for (const f of findings) {
      if (f.start < hold && f.end > hold) hold = text.length - f.start <= this.maxHold ? f.start : f.end;
    }
    this.carry = text.slice(hold);
    this.context = text.slice(Math.max(0, hold - CONTEXT_CHARS), hold);
    const emitted = findings.filter((f) => f.end <= hold).map((f) => ({ detector: f.detector, start: f.start - base, end: f.end - base }));
    for (const f of emitted) {
      this.counts.set(f.detector, (this.counts.get(f.detector) ?? 0) + 1);
      this.onFinding?.(f.detector);
    }
    const out = text.slice(base, hold);
    if (!this.styles || emitted.length === 0) return maskText(out, emitted, this.style, this.opts)!;
    let masked = '';
    let at = 0;
    for (const f of emitted) {
      if (f.start < at) continue;
      masked += out.slice(at, f.start) + maskValue(out.slice(f.start, f.end), this.styles.get(f.detector) ?? this.style, f.detector, this.opts)!;
      at = f.end;
    }
    return masked + out.slice(at);
  }
}

/** The last token of text, when it is the beginning of a secret cut short (from base on), as a finding. */
function cutSecret(text: string, base: number): Finding | null {
  const n = text.length;
  if (n === base || isSpace(text.charCodeAt(n - 1))) return null;
  let t = n;
  while (t > 0 && !isSpace(text.charCodeAt(t - 1)) && n - t < MAX_TOKEN_HOLD) t--;
  const raw = text.slice(t);
  const token = raw.includes('\x1b') ? raw.replace(ESCAPE, '') : raw;
  // (A value's name alone, a prompt such as Password: at a pause, is not a value yet.)
  const v = TOKEN_START.exec(token) ? null : VALUE_START.exec(token);
  const m = TOKEN_START.exec(token) ?? (v && !(v.index + v[0].length === token.length && /[=:]["']?$/.test(v[0])) ? v : null);
  let detector: string | undefined;
  let start = t;
  if (m) {
    detector = START_DETECTOR.find(([re]) => re.test(m[0]))?.[1] ?? 'env_secret';
    if (token === raw) start = t + m.index;
  } else {
    const before = text.slice(Math.max(0, t - 96), t).replace(ESCAPE, '');
    const named = NAMED_BEFORE.exec(before + (/^E?'/.test(token) ? token.slice(0, token.indexOf("'") + 1) : ''));
    if (!named) return null;
    detector = NAMED_DETECTOR.find(([re]) => re.test(named[0]))?.[1] ?? 'env_secret';
  }
  start = Math.max(start, base);
  return start < n ? { detector, start, end: n } : null;
}

/** Where the tail that might continue into a secret begins (text.length: nothing to hold). */
function holdFrom(text: string, maxHold: number): number {
  const n = text.length;
  const floor = Math.max(0, n - maxHold);
  // The last token, when the text does not end in whitespace.
  let hold = n;
  const tokenFloor = Math.max(floor, n - MAX_TOKEN_HOLD);
  while (hold > tokenFloor && !isSpace(text.charCodeAt(hold - 1))) hold--;
  // Digit groups right before it: the first groups of a card number.
  const tailStart = Math.max(floor, hold - 40);
  const m = CARD_TAIL.exec(text.slice(tailStart, hold));
  if (m && (tailStart === 0 || m.index > 0 || !/[0-9A-Za-z_.,-]/.test(text[tailStart - 1]!))) hold = tailStart + m.index;
  // A private key block begun and not ended.
  const begin = text.lastIndexOf('-----BEGIN', n);
  if (begin >= floor) {
    const endAt = text.indexOf('-----END', begin);
    if (endAt < 0 || !/^-----END[ A-Z0-9]{0,60}-----/.test(text.slice(endAt, endAt + 80))) hold = Math.min(hold, begin);
  }
  return Math.max(hold, floor);
}

function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13 || c === 12 || c === 11;
}

// ---- edges of input that cannot wait ----

/**
 * Where a secret may begin inside a token cut at a chunk edge, and the detector it would be: a
 * token prefix at a boundary (case as issued), or a name that says a value follows (password=,
 * GITHUB_TOKEN=, "secret":), or scheme://user: with no path after it. Not pwd= (PWD=/home/x).
 */
const TOKEN_START = /(?<![A-Za-z0-9_])(?:hooks\.slack\.com\/|A(?:KIA|SIA|BIA|CCA)|gh[pousr]_|github_pat_|gl(?:pat|dt|rt|ptt|soat|ffct|cbt)-|xox[abposr]-|xapp-|[sr]k_(?:live|test)_|AIza|eyJ|-----BEGIN)/;
const VALUE_START = /(?:passw(?:or)?d|passphrase|token|secret|api[_-]?key|access[_-]?key|private[_-]?key)["']?[=:]|[A-Za-z][A-Za-z0-9+.-]{1,30}:\/\/[^\s:/?#@'"<>]{1,256}:[^\s/?#'"<>@]*$/i;
/** Text before a token that makes the token a value (aws_secret_access_key = …, Authorization: Bearer …, PASSWORD '…). */
const NAMED_BEFORE = /(?:(?:passw(?:or)?d|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)["']?[ \t]{0,8}(?:[:=]|=>)[ \t]{0,8}["']?|(?:bearer|basic)[ \t]{1,8}|(?:password|identified[ \t]{1,8}by)[ \t]{1,8}E?')$/i;
const NAMED_DETECTOR: Array<[RegExp, string]> = [
  [/secret_?access_?key/i, 'aws'], [/^(?:bearer|basic)[ \t]/i, 'http_auth_header'], [/^(?:password|identified)[ \t]/i, 'sql_password'],
  [/^(?:passw|passphrase)/i, 'url_credentials'],
];
const START_DETECTOR: Array<[RegExp, string]> = [
  [/^hooks/, 'slack'], [/^A/, 'aws'], [/^gh|^github/, 'github'], [/^gl/, 'gitlab'], [/^x(?:ox|app)/, 'slack'], [/^[sr]k_/, 'stripe'], [/^AIza/, 'google_api'],
  [/^eyJ/, 'jwt'], [/^-----BEGIN/, 'private_key'], [/:\/\//, 'url_credentials'], [/^(?:passw|passphrase)/i, 'url_credentials'],
];
const SYNTHETIC_KEY_HEADER = '-----BEGIN PRIVATE KEY-----\n';

/**
 * Masks chunks of a stream that must be recorded as they come, before they are forwarded (terminal
 * input, a script on stdin): nothing can be held back, so a secret cut by a chunk edge is caught in
 * three ways — the last CONTEXT_CHARS characters are scanned again with the next chunk (a key word
 * before the value, the first half of a token: the second half is masked); a chunk that ends inside
 * a token that begins like a secret (ghp_, AKIA, eyJ, password=, scheme://user:…) has that part
 * masked, and so has the next chunk up to the token's end; a private key block that had not ended
 * goes on being masked until its END line. A secret typed key by key is so recorded as its prefix
 * (ghp) and masks. Stateful, bounded: CONTEXT_CHARS of memory.
 */
export class EdgeMasker {
  private readonly detectors: readonly Detector[];
  private readonly style: Exclude<MaskStyle, 'null'>;
  private readonly opts: MaskOptions;
  private context = '';
  /** The detector of a token cut at the last edge (the next chunk's leading token is masked as it). */
  private partial: string | null = null;
  private inKeyBlock = false;

  constructor(options: { detectors?: readonly Detector[]; style?: Exclude<MaskStyle, 'null'>; key?: Buffer } = {}) {
    this.detectors = options.detectors ?? DEFAULT_DETECTORS;
    this.style = options.style ?? 'redact';
    this.opts = options.key ? { key: options.key } : {};
  }

  /** The chunk as it may be recorded, and what was masked in it (detector → count). */
  mask(chunk: string): { text: string; found: Map<string, number> } {
    const found = new Map<string, number>();
    if (chunk.length === 0) return { text: chunk, found };
    const header = this.inKeyBlock ? SYNTHETIC_KEY_HEADER : '';
    const scan = header + this.context + chunk;
    const base = header.length + this.context.length;
    const spans: Finding[] = [];
    let keyOpen = false;
    if (mayHoldSecrets(scan, this.detectors) || this.inKeyBlock) {
      for (const f of findSecrets(scan, this.inKeyBlock && !this.detectors.includes(privateKey) ? [...this.detectors, privateKey] : this.detectors)) {
        if (f.end <= base) continue;
        if (f.detector === 'private_key' && f.end === scan.length && !/-----END[ A-Z0-9]{0,60}-----\s*$/.test(scan.slice(-80))) keyOpen = true;
        spans.push({ detector: f.detector, start: Math.max(f.start, base) - base, end: f.end - base });
      }
    }
    // The rest of a token cut at the last edge.
    if (this.partial) {
      let end = 0;
      while (end < chunk.length && !isSpace(chunk.charCodeAt(end))) end++;
      if (end > 0) spans.push({ detector: this.partial, start: 0, end });
      if (end < chunk.length) this.partial = null;
    }
    // A token at the end that begins like a secret: mask its part in this chunk; the next chunk goes on.
    if (!isSpace(chunk.charCodeAt(chunk.length - 1))) {
      const whole = this.context + chunk;
      let t = whole.length;
      while (t > 0 && !isSpace(whole.charCodeAt(t - 1)) && whole.length - t < MAX_TOKEN_HOLD) t--;
      const token = whole.slice(t);
      const m = TOKEN_START.exec(token) ?? VALUE_START.exec(token);
      const named = m || this.partial ? null : NAMED_BEFORE.exec(whole.slice(Math.max(0, t - 96), t) + (/^E?'/.test(token) ? token.slice(0, token.indexOf("'") + 1) : ''));
      if (m) {
        const start = Math.max(t + m.index, this.context.length) - this.context.length;
        const detector = START_DETECTOR.find(([re]) => re.test(m[0]))?.[1] ?? 'env_secret';
        spans.push({ detector, start, end: chunk.length });
        this.partial = detector;
      } else if (named) {
        const start = Math.max(t, this.context.length) - this.context.length;
        const detector = NAMED_DETECTOR.find(([re]) => re.test(named[0]))?.[1] ?? 'env_secret';
        spans.push({ detector, start, end: chunk.length });
        this.partial = detector;
      }
    } else {
      this.partial = null;
    }
    this.inKeyBlock = keyOpen;
    this.context = (this.context + chunk).slice(-CONTEXT_CHARS);
    if (spans.length === 0) return { text: chunk, found };
    spans.sort((a, b) => a.start - b.start || b.end - a.end);
    const merged: Finding[] = [];
    for (const s of spans) {
      const last = merged.at(-1);
      if (last && s.start < last.end) { if (s.end > last.end) last.end = s.end; continue; }
      merged.push({ ...s });
    }
    for (const f of merged) found.set(f.detector, (found.get(f.detector) ?? 0) + 1);
    return { text: maskText(chunk, merged, this.style, this.opts)!, found };
  }

  /** Bytes (latin1 one to one: every detector is ASCII). */
  maskBytes(chunk: Buffer): { bytes: Buffer; found: Map<string, number> } {
    const { text, found } = this.mask(chunk.toString('latin1'));
    return { bytes: found.size === 0 ? chunk : Buffer.from(text, 'latin1'), found };
  }
}
