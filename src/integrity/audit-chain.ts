// Integrity of the admin audit log: each gateway keeps one hash chain (the session chain's format,
// under the name "audit:<gatewayId>"), every entry is signed (changes are rare, so no batching of
// signatures is needed), and the newest position is anchored in a signed file in the data
// directory, so that cutting entries off the end shows too. Checked by `gatehouse verify --store`.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { canonicalJson } from './canonical-json.ts';
import { eventHash, GENESIS_HASH } from './hash-chain.ts';
import { verifySignature, type SigningKey } from './signing-keys.ts';
import type { AuditEntryRow } from '../store/types.ts';

interface AuditEntryHead { kind: 'gatehouse.audit'; v: 1; gatewayId: string; seq: number; ts: number; hash: string; keyId: string }
interface AuditLogHead { kind: 'gatehouse.audit-head'; v: 1; gatewayId: string; seq: number; hash: string; keyId: string }
export interface SignedAuditHead { payload: string; keyId: string; signature: string }

const chainName = (gatewayId: string) => `audit:${gatewayId}`;

/** The next entry after `prev` (null: the first), hashed into the chain and signed. */
export function chainAuditEntry(key: SigningKey, gatewayId: string, prev: Pick<AuditEntryRow, 'seq' | 'hash'> | null, ts: number, type: string, data: string): AuditEntryRow {
  const seq = prev ? prev.seq + 1 : 0;
  const hash = eventHash({ sessionId: chainName(gatewayId), seq, ts, type, data }, prev?.hash ?? GENESIS_HASH);
  const head: AuditEntryHead = { kind: 'gatehouse.audit', v: 1, gatewayId, seq, ts, hash, keyId: key.keyId };
  return { gatewayId, seq, ts, type, data, hash, keyId: key.keyId, signature: key.sign(canonicalJson(head)) };
}

export function writeAuditHead(file: string, key: SigningKey, gatewayId: string, seq: number, hash: string): void {
  const head: AuditLogHead = { kind: 'gatehouse.audit-head', v: 1, gatewayId, seq, hash, keyId: key.keyId };
  const payload = canonicalJson(head);
  writeFileSync(`${file}.tmp`, JSON.stringify({ payload, keyId: key.keyId, signature: key.sign(payload) } satisfies SignedAuditHead) + '\n', { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

export function readAuditHead(file: string): SignedAuditHead | null {
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) as SignedAuditHead : null;
}

export interface AuditVerification { entries: number; gateways: number; problems: string[] }

/**
 * Checks every gateway's chain (positions without gaps, hashes recomputed, every entry signed by a
 * known — and, if given, trusted — key) and, when the anchored head is given, that nothing after
 * it was cut off. Reports the first problem per gateway.
 */
export function verifyAuditLog(entries: AuditEntryRow[], keys: Map<string, string>, trustedKeyIds?: Set<string>, head?: SignedAuditHead | null): AuditVerification {
  const out: AuditVerification = { entries: entries.length, gateways: 0, problems: [] };
  const byGateway = new Map<string, AuditEntryRow[]>();
  for (const e of entries) byGateway.set(e.gatewayId, [...(byGateway.get(e.gatewayId) ?? []), e]);
  out.gateways = byGateway.size;
  for (const [gatewayId, list] of byGateway) {
    const problem = checkChain(gatewayId, list.sort((a, b) => a.seq - b.seq), keys, trustedKeyIds);
    if (problem) out.problems.push(`admin audit log of gateway ${gatewayId}: ${problem}`);
  }
  if (head) {
    const pem = keys.get(head.keyId);
    if (!pem || (trustedKeyIds && !trustedKeyIds.has(head.keyId)) || !verifySignature(pem, head.payload, head.signature)) {
      out.problems.push('the admin audit log head file is not signed by a trusted gateway key');
    } else {
      const h = JSON.parse(head.payload) as AuditLogHead;
      const at = byGateway.get(h.gatewayId)?.find((e) => e.seq === h.seq);
      if (!at) out.problems.push(`the admin audit log of gateway ${h.gatewayId} ends before entry ${h.seq}, which the gateway wrote: entries were removed from its end`);
      else if (at.hash !== h.hash) out.problems.push(`admin audit log entry ${h.seq} of gateway ${h.gatewayId} is not the entry the gateway wrote there`);
    }
  }
  return out;
}

function checkChain(gatewayId: string, list: AuditEntryRow[], keys: Map<string, string>, trustedKeyIds?: Set<string>): string | null {
  let prev = GENESIS_HASH;
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    if (e.seq !== i) return `entry ${i} is missing (the sequence jumps to ${e.seq}): entries were removed`;
    const hash = eventHash({ sessionId: chainName(gatewayId), seq: e.seq, ts: e.ts, type: e.type, data: e.data }, prev);
    if (hash !== e.hash) return `entry ${i} (${e.type}) does not match its recorded hash: it, or one before it, was edited`;
    const pem = keys.get(e.keyId);
    if (!pem) return `entry ${i} is signed by key ${e.keyId}, which is unknown`;
    if (trustedKeyIds && !trustedKeyIds.has(e.keyId)) return `entry ${i} is signed by key ${e.keyId}, which is not a trusted key`;
    const head: AuditEntryHead = { kind: 'gatehouse.audit', v: 1, gatewayId, seq: e.seq, ts: e.ts, hash: e.hash, keyId: e.keyId };
    if (!verifySignature(pem, canonicalJson(head), e.signature)) return `entry ${i}: the signature is invalid (the entry or the key was changed)`;
    prev = e.hash;
  }
  return null;
}
