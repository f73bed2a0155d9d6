// The seal log's head, signed and kept in the data directory beside the signing keys — outside
// the database. Without it, deleting the newest sealed sessions (cutting the end off the log)
// would leave a perfectly linked, shorter log. With it, `verify --store` and the next start
// both notice that positions the gateway once wrote are gone.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { canonicalJson } from './canonical-json.ts';
import type { SigningKey } from './signing-keys.ts';

export interface SealLogHead { kind: 'gatehouse.seal-log-head'; v: 1; gatewayId: string; position: number; hash: string; ts: number; keyId: string }
export interface SignedSealLogHead { payload: string; keyId: string; signature: string }

export function writeSealLogHead(file: string, key: SigningKey, gatewayId: string, position: number, hash: string): void {
  const head: SealLogHead = { kind: 'gatehouse.seal-log-head', v: 1, gatewayId, position, hash, ts: Date.now(), keyId: key.keyId };
  const payload = canonicalJson(head);
  const doc: SignedSealLogHead = { payload, keyId: key.keyId, signature: key.sign(payload) };
  writeFileSync(`${file}.tmp`, JSON.stringify(doc) + '\n', { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

export function readSealLogHead(file: string): SignedSealLogHead | null {
  if (!existsSync(file)) return null;
  return JSON.parse(readFileSync(file, 'utf8')) as SignedSealLogHead;
}
