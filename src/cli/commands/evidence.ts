// Evidence commands: export a session as a bundle, verify bundles offline or the whole store,
// and manage the signing keys.
import { readFileSync, readdirSync, existsSync, statSync } from 'node:fs';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import path from 'node:path';
import type { Command } from 'commander';
import type { ApiClient } from '../api-client.ts';
import { writeBundle, verifyBundle, verifyBundleArchive, type BundleContent } from '../../integrity/bundle.ts';
import { keyIdOf } from '../../integrity/signing-keys.ts';
import type { Store } from '../../store/types.ts';
import { lines, visible } from '../format.ts';

type ClientFactory = (cmd: Command) => ApiClient;

function readTrustedKeys(files: string[]): string[] {
  return files.map((f) => {
    const text = readFileSync(f, 'utf8');
    // Accept a public key, or derive it from a private key file.
    const key = text.includes('PRIVATE KEY') ? createPublicKey(createPrivateKey(text)) : createPublicKey(text);
    return key.export({ format: 'pem', type: 'spki' }).toString();
  });
}

/** The public keys of the private key files in <data-dir>/signing (or GATEHOUSE_SIGNING_KEY_FILE): the store's trust anchor. */
function dataDirKeyIds(dataDir: string): Set<string> {
  const dir = path.join(dataDir, 'signing');
  const ids = new Set<string>();
  const configured = process.env.GATEHOUSE_SIGNING_KEY_FILE;
  if (configured) ids.add(keyIdOf(createPublicKey(createPrivateKey(readFileSync(configured)))));
  if (!existsSync(dir)) return ids;
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.pem'))) {
    ids.add(keyIdOf(createPublicKey(createPrivateKey(readFileSync(path.join(dir, f))))));
  }
  return ids;
}

export function registerEvidence(program: Command, client: ClientFactory, sessions: Command): void {
  sessions.command('export <id>').description('write a self-contained, verifiable bundle of the session')
    .requiredOption('--out <dir>', 'directory to write (created if missing)')
    .action(async (id: string, opts: { out: string }, cmd: Command) => {
      const content = await client(cmd).get<BundleContent>(`/api/v1/sessions/${encodeURIComponent(id)}/evidence`);
      const manifest = writeBundle(opts.out, content);
      console.log(`exported session ${id}: ${content.events.length} events, ${content.checkpoints.length} checkpoints, ${content.seal ? 'sealed' : 'NOT sealed (still open)'} → ${opts.out}`);
      console.log(`files: ${Object.keys(manifest.files).join(', ')}, manifest.json`);
    });

  program.command('verify [bundle]').description('verify an exported bundle (directory, or the .bundle.tar.gz the console downloads) offline, or the whole store with --store')
    .option('--store', 'verify every session and the seal log in the store (run on the gateway host)')
    .option('--data-dir <dir>', 'data directory of the gateway (key files, seal-log head; its SQLite store unless --store-url)', './.gatehouse')
    .option('--store-url <url>', 'verify a PostgreSQL store instead (or GATEHOUSE_STORE)')
    .option('--trusted-key <file...>', 'only accept signatures by these keys (public or private PEM)')
    .action(async (dir: string | undefined, opts: { store?: boolean; dataDir: string; storeUrl?: string; trustedKey?: string[] }) => {
      const trusted = readTrustedKeys(opts.trustedKey ?? []);
      if (opts.store) {
        const { verifyStore } = await import('../../integrity/store-verifier.ts');
        const url = opts.storeUrl ?? process.env.GATEHOUSE_STORE;
        let store: Store;
        if (url) {
          const { PostgresStore } = await import('../../store/postgres/postgres-store.ts');
          store = await PostgresStore.open(url);
        } else {
          const { SqliteStore } = await import('../../store/sqlite/sqlite-store.ts');
          const file = path.join(opts.dataDir, 'gatehouse.db');
          if (!existsSync(file)) throw new Error(`no store at ${file}`);
          // A reader beside a running gateway: never the journal writer, which is the gateway's alone.
          store = new SqliteStore(file, { recordWriter: 'inline' });
        }
        try {
          const anchors = trusted.length > 0 ? new Set(trusted.map((pem) => keyIdOf(createPublicKey(pem)))) : dataDirKeyIds(opts.dataDir);
          if (anchors.size === 0) console.log('WARNING no trust anchor: no key files in <data-dir>/signing and no --trusted-key; signatures are checked against the store\'s own key table');
          const { readSealLogHead } = await import('../../integrity/seal-log-anchor.ts');
          const { readAuditHead } = await import('../../integrity/audit-chain.ts');
          const r = await verifyStore(store, {
            trustedKeyIds: anchors.size > 0 ? anchors : undefined,
            sealLogHead: readSealLogHead(path.join(opts.dataDir, 'seal-log.head')),
            auditHead: readAuditHead(path.join(opts.dataDir, 'audit-log.head')),
          });
          for (const p of r.problems) console.log(visible(`BROKEN  ${p}`));
          const expired = r.expired > 0 ? `, ${r.expired} removed by retention (tombstoned)` : '';
          console.log(`${r.sessions} sessions (${r.sealed} sealed and intact, ${r.open} open), ${r.seals} seals in the log${expired}: ${r.problems.length === 0 ? 'all intact' : `${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}`}`);
          console.log(`admin audit log: ${r.auditEntries} entr${r.auditEntries === 1 ? 'y' : 'ies'} from ${r.auditGateways} gateway${r.auditGateways === 1 ? '' : 's'}`);
          if (r.problems.length > 0) process.exitCode = 1;
        } finally {
          await store.close();
        }
        return;
      }
      if (!dir) throw new Error('give a bundle directory or file, or --store');
      // A directory (sessions export), or the file the console downloads (ID.bundle.tar.gz).
      const r = existsSync(dir) && statSync(dir).isFile() ? verifyBundleArchive(dir, trusted) : verifyBundle(dir, trusted);
      if (r.ok) {
        // A bundle is untrusted input until verified, and even then its text was chosen by clients.
        console.log(lines([
          `OK  session ${r.sessionId}: ${r.events} events, ${r.checkpoints} checkpoints, sealed at log position ${r.seal?.position}`,
          `    identity ${r.seal?.identity.name} (${r.seal?.identity.kind}) on ${r.seal?.connection}; ended: ${r.seal?.endReason}`,
          `    signed by key ${r.keyIds.join(', ')}${trusted.length === 0 ? ' — compare with `gatehouse keys list` on the gateway, or pin it with --trusted-key' : ' (trusted)'}`,
        ]));
      } else {
        console.log(visible(`BROKEN  ${r.problem}`));
        process.exitCode = 1;
      }
    });

  const keys = program.command('keys').description('signing keys of checkpoints and seals');
  keys.command('list').description('key ids and public keys of the store (old keys stay for verification)')
    .option('--data-dir <dir>', 'data directory', './.gatehouse')
    .action(async (opts: { dataDir: string }) => {
      const { SqliteStore } = await import('../../store/sqlite/sqlite-store.ts');
      const store = new SqliteStore(path.join(opts.dataDir, 'gatehouse.db'), { recordWriter: 'inline' });
      try {
        for (const k of await store.listSigningKeys()) console.log(`${k.keyId}  added ${new Date(k.createdAt).toISOString()}\n${k.publicKeyPem}`);
      } finally {
        await store.close();
      }
    });
  keys.command('rotate').description('create a new signing key; the gateway uses it from its next start')
    .option('--data-dir <dir>', 'data directory', './.gatehouse')
    .action(async (opts: { dataDir: string }) => {
      const { rotateSigningKey } = await import('../../integrity/signing-keys.ts');
      const key = rotateSigningKey(path.join(opts.dataDir, 'signing'));
      console.log(`new signing key ${key.keyId}; restart the gateway to use it (older keys stay valid for older recordings)`);
    });
}
