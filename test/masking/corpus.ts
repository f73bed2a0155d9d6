// A corpus of well-formed FAKE secrets and of look-alikes that are not secrets, generated from a
// fixed seed (the same corpus on every run). Generated rather than stored as text so that no file in
// the repository looks like a leaked credential to a secret scanner; every value is random, none
// was ever issued by anyone.
import { generateKeyPairSync, createHmac } from 'node:crypto';

export interface Positive { detector: string; secret: string; text: string }
export interface Negative { kind: string; text: string }

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const UPPER_NUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const B64 = ALNUM + '+/';
const B64URL = ALNUM + '-_';

export function luhnComplete(prefix: string, length: number, r: () => number): string {
  let d = prefix;
  while (d.length < length - 1) d += String(Math.floor(r() * 10));
  for (let c = 0; c < 10; c++) {
    const candidate = d + c;
    let sum = 0; let dbl = false;
    for (let i = candidate.length - 1; i >= 0; i--) { let x = Number(candidate[i]); if (dbl) { x *= 2; if (x > 9) x -= 9; } sum += x; dbl = !dbl; }
    if (sum % 10 === 0) return candidate;
  }
  throw new Error('unreachable');
}

function luhnOk(d: string): boolean {
  let sum = 0; let dbl = false;
  for (let i = d.length - 1; i >= 0; i--) { let x = Number(d[i]); if (dbl) { x *= 2; if (x > 9) x -= 9; } sum += x; dbl = !dbl; }
  return sum % 10 === 0;
}

const CONTEXTS: Array<(s: string) => string> = [
  (s) => s,
  (s) => `token: ${s}`,
  (s) => `{"value": "${s}", "ok": true}`,
  (s) => `export VALUE=${s}\n`,
  (s) => `2026-12-04T18:00:00Z INFO using ${s} for the request`,
  (s) => `| 42 | ${s} | active |`,
  (s) => `curl -H 'X-Key: ${s}' https://api.example.com/v1`,
  (s) => `'${s}'`,
  (s) => `https://api.example.com/v1/hook?key=${s}&x=1`,
  (s) => `INSERT INTO settings VALUES ('k', '${s}');`,
  (s) => `the value is \`${s}\`.`,
];

const KEY_CACHE: string[] = [];
function pemKeys(): string[] {
  if (KEY_CACHE.length) return KEY_CACHE;
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
  KEY_CACHE.push(rsa.export({ type: 'pkcs1', format: 'pem' }) as string);
  KEY_CACHE.push(rsa.export({ type: 'pkcs8', format: 'pem' }) as string);
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  KEY_CACHE.push(ec.export({ type: 'sec1', format: 'pem' }) as string);
  const ed = generateKeyPairSync('ed25519').privateKey;
  KEY_CACHE.push(ed.export({ type: 'pkcs8', format: 'pem' }) as string);
  KEY_CACHE.push(rsa.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'fake' }) as string);
  return KEY_CACHE;
}

export function buildCorpus(seed = 15): { positives: Positive[]; negatives: Negative[] } {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const str = (alphabet: string, n: number) => { let s = ''; for (let i = 0; i < n; i++) s += alphabet[Math.floor(r() * alphabet.length)]; return s; };
  const positives: Positive[] = [];
  const add = (detector: string, secret: string, text?: string) => positives.push({ detector, secret, text: text ?? pick(CONTEXTS)(secret) });
  const N = 30;
  for (let i = 0; i < N; i++) {
    add('aws', pick(['AKIA', 'ASIA']) + str(UPPER_NUM, 16));
    const sk = str(B64, 40);
    add('aws', sk, pick([`aws_secret_access_key = ${sk}`, `AWS_SECRET_ACCESS_KEY=${sk}`, `"SecretAccessKey": "${sk}"`, `secret_key: '${sk}'`]));
    add('github', pick(['ghp_', 'gho_', 'ghu_', 'ghs_', 'ghr_']) + str(ALNUM, 36));
    add('github', `github_pat_${str(ALNUM, 22)}_${str(ALNUM, 59)}`);
    add('gitlab', `glpat-${str(ALNUM + '-_', 20)}`);
    add('slack', `${pick(['xoxb', 'xoxp', 'xoxa', 'xoxr', 'xoxs'])}-${str('0123456789', 12)}-${str('0123456789', 13)}-${str(ALNUM, 24)}`);
    add('slack', `https://hooks.slack.com/services/T${str(UPPER_NUM, 8)}/B${str(UPPER_NUM, 8)}/${str(ALNUM, 24)}`);
    add('stripe', `${pick(['sk', 'rk'])}_live_${str(ALNUM, 24 + Math.floor(r() * 75))}`);
    add('google_api', `AIza${str(ALNUM + '-_', 35)}`);
    const header = Buffer.from(JSON.stringify({ alg: pick(['HS256', 'RS256', 'ES256', 'EdDSA']), typ: 'JWT', ...(r() < 0.5 ? { kid: str(ALNUM, 8) } : {}) })).toString('base64url');
    const payload = Buffer.from(JSON.stringify({ sub: str(ALNUM, 10), iat: 1733330000 + i, exp: 1733333600 + i })).toString('base64url');
    const sig = createHmac('sha256', str(ALNUM, 16)).update(`${header}.${payload}`).digest('base64url');
    add('jwt', `${header}.${payload}.${sig}`, pick([`Authorization: Bearer ${header}.${payload}.${sig}`, `id_token=${header}.${payload}.${sig}`, `${header}.${payload}.${sig}`]));
    const pw = str(ALNUM + '!$%^*-_', 8 + Math.floor(r() * 20));
    add('url_credentials', pw, `${pick(['postgres', 'postgresql', 'mysql', 'redis', 'https', 'amqp', 'mongodb+srv'])}://${pick(['app', 'admin', 'svc_user', ''])}:${pw}@${pick(['db.internal', '10.0.0.5', 'cache.example.com'])}:${pick(['5432', '3306', '6379'])}/x`);
    const pw2 = str(ALNUM + '!%^*-_', 8 + Math.floor(r() * 20));
    add('url_credentials', pw2, pick([`host=db port=5432 password=${pw2} user=app`, `Server=db;Database=x;User Id=app;Password=${pw2};`, `"password": "${pw2}"`, `PGPASSWORD: '${pw2}'`.replace('PGPASSWORD', 'password')]));
    const [prefix, len] = pick([['4', 16], ['4', 13], ['51', 16], ['55', 16], ['2221', 16], ['34', 15], ['37', 15], ['6011', 16], ['65', 16], ['3530', 16], ['36', 14], ['62', 19]] as const);
    const card = luhnComplete(prefix, len, r);
    const sep = pick(['', ' ', '-']);
    const grouped = sep === '' ? card : len === 15 ? `${card.slice(0, 4)}${sep}${card.slice(4, 10)}${sep}${card.slice(10)}` : card.match(/.{1,4}/g)!.join(sep);
    add('credit_card', grouped);
  }
  for (const pem of pemKeys()) {
    add('private_key', pem.trim(), `here is the key:\n${pem}done`);
    add('private_key', pem.trim(), JSON.stringify({ k: pem }).includes('\\n') ? pem.trim() : pem);
  }
  // OpenSSH and PGP shapes (random bodies: the detector looks at the armour, as gitleaks does).
  for (let i = 0; i < 4; i++) {
    const body = Array.from({ length: 6 }, () => str(B64, 70)).join('\n');
    add('private_key', `-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA${str(B64, 46)}\n${body}\n-----END OPENSSH PRIVATE KEY-----`);
    add('private_key', `-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\nlQOYBF${str(B64, 64)}\n${body}\n=${str(B64, 4)}\n-----END PGP PRIVATE KEY BLOCK-----`);
  }

  const negatives: Negative[] = [];
  const neg = (kind: string, text: string) => negatives.push({ kind, text });
  const hex = (n: number) => str('0123456789abcdef', n);
  for (let i = 0; i < 60; i++) {
    neg('uuid', `${hex(8)}-${hex(4)}-4${hex(3)}-${pick(['8', '9', 'a', 'b'])}${hex(3)}-${hex(12)}`);
    neg('git sha', pick([(s: string) => s, (s: string) => `commit ${s}`, (s: string) => `${s.slice(0, 12)} Merge branch`])(hex(40)));
    neg('sha256', `sha256:${hex(64)}`);
    neg('base64 of ordinary data', Buffer.from(pick(['hello world, this is a perfectly ordinary sentence.', `{"id": ${i}, "name": "widget", "price": 9.99}`, 'The quick brown fox jumps over the lazy dog '.repeat(2), str(ALNUM, 30)])).toString('base64'));
    // Order numbers that fail Luhn (and look like cards).
    let order: string;
    do { const p = pick(['4', '51', '6011', '37']); order = p + str('0123456789', 16 - p.length); } while (luhnOk(order));
    neg('order number failing Luhn', pick([`order #${order}`, `Order: ${order.match(/.{1,4}/g)!.join('-')}`, order]));
    neg('url without password', pick([`https://example.com/path?x=${i}`, `postgres://db.internal:5432/app`, `https://user@github.com/org/repo.git`, `ssh://git@gitlab.example.com:2222/group/project.git`, `http://localhost:8080/api/v1/sessions?q=password`]));
    neg('timestamp', String(1733330000000000 + Math.floor(r() * 1e9)));
    neg('phone', `+1 ${str('23456789', 3)} ${str('0123456789', 3)} ${str('0123456789', 4)}`);
    neg('ip and port', `${Math.floor(r() * 255)}.${Math.floor(r() * 255)}.${Math.floor(r() * 255)}.${Math.floor(r() * 255)}:${Math.floor(r() * 65535)}`);
    neg('prose', pick(['Please reset your password using the link below.', 'The password field must be at least 12 characters.', 'Enter password:', 'AKIA is the prefix of an access key id', 'ghp_ tokens are GitHub personal access tokens', 'see -----BEGIN CERTIFICATE----- blocks', 'sk_live_ is how a live Stripe key starts']));
    neg('jwt-like', `eyJ${str(B64URL, 20)}.${str(B64URL, 20)}.${str(B64URL, 20)}`);
    neg('version', `v${Math.floor(r() * 20)}.${Math.floor(r() * 20)}.${Math.floor(r() * 200)}-rc.${Math.floor(r() * 9)}`);
    neg('path', `/var/lib/postgresql/16/main/base/${Math.floor(r() * 99999)}/${Math.floor(r() * 99999)}`);
    neg('sql', pick([`SELECT * FROM users WHERE id = ${i}`, `UPDATE orders SET status = 'shipped' WHERE id = ${i}`, `SELECT password_hash IS NOT NULL FROM users`]));
    neg('isbn / long id', pick([`ISBN 978-${str('0123456789', 10)}`, `id=${str('0123456789', 20)}`]));
    neg('random base64 (40 chars, no key word)', `blob ${str(B64, 40)}`);
    neg('hex api-like id', `request-id: ${hex(32)}`);
    neg('snowflake id', `id ${String(1866000000000000000n + BigInt(Math.floor(r() * 1e15)))}`);
    neg('word with a token prefix', pick(['AKIAxyz', 'ghp_short', 'xoxb-', 'sk_live_abc', 'AIzaShort', 'glpat-short', 'eyJhbGciOiJub25lIn0']));
    neg('password placeholder', pick(['password=$PGPASSWORD', 'password: ${DB_PASSWORD}', 'password=?', 'postgres://app:${DB_PASSWORD}@db/x', 'password=****']));
  }
  return { positives, negatives };
}
