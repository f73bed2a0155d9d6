// The terminal recorder's masking, on a real recorder and SQLite store: output split across writes
// is masked whole, a held tail is recorded after the pause or at flush, hidden input after the
// prompts that ask for secrets (sudo, ssh-keygen, psql, read -s), and not after ordinary prompts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.ts';
import { Recorder, type SessionRecording, type SessionStartInfo } from '../../src/recorder/recorder.ts';
import { loadSigningKey } from '../../src/integrity/signing-keys.ts';
import { TerminalRecorder } from '../../src/engines/ssh/terminal-recorder.ts';

const info: SessionStartInfo = {
  protocol: 'ssh', identityId: 'id_1', identityName: 'alice', identityKind: 'human', clientAddr: '127.0.0.1', applicationName: 'test',
  connectionId: 'conn_1', connectionName: 'box', targetHost: '127.0.0.1', targetPort: 22, targetDatabase: '', targetUser: 'root',
  recordingMode: 'durable', identityClaims: null, authMethod: 'publickey',
};

async function withRecorder(fn: (rec: SessionRecording, events: () => Promise<Array<{ type: string; data: Record<string, unknown> }>>) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'gatehouse-term-mask-'));
  const store = new SqliteStore(path.join(dir, 'gatehouse.db'));
  const recorder = new Recorder(store, pino({ level: 'silent' }), loadSigningKey(path.join(dir, 'signing')));
  try {
    await recorder.init();
    const rec = await recorder.startSession(info);
    await fn(rec, async () => {
      await recorder.flush();
      return (await store.listEvents(rec.id)).map((e) => ({ type: e.type, data: JSON.parse(e.data) as Record<string, unknown> }));
    });
  } finally {
    await recorder.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const TOKEN = `ghp_${'Ab3'.repeat(12)}`;
const out = (evs: Array<{ type: string; data: Record<string, unknown> }>) => evs.filter((e) => e.type === 'term.out').map((e) => String(e.data.d)).join('');

test('output: a token written in pieces is masked whole; what is held is recorded after a pause, or at flush', async () => {
  await withRecorder(async (rec, events) => {
    const t = new TerminalRecorder(rec, 0);
    t.output(Buffer.from(`$ cat token\r\n${TOKEN.slice(0, 9)}`));
    t.output(Buffer.from(TOKEN.slice(9, 30)));
    t.output(Buffer.from(`${TOKEN.slice(30)}\r\n$ `));
    let evs = await events();
    assert.equal(out(evs), '$ cat token\r\n[masked:github]\r\n$ ');
    assert.deepEqual(evs.filter((e) => e.type === 'term.out').flatMap((e) => (e.data.masked as unknown[]) ?? []), [{ field: 'd', detector: 'github', count: 1 }]);
    // A partial word waits for more output, then goes after the pause (500 ms).
    t.output(Buffer.from('partial'));
    evs = await events();
    assert.ok(!out(evs).endsWith('partial'));
    await new Promise((r) => setTimeout(r, 800));
    evs = await events();
    assert.ok(out(evs).endsWith('$ partial'), JSON.stringify(out(evs)));
    t.output(Buffer.from('end-of-stream'));
    t.flush();
    evs = await events();
    assert.ok(out(evs).endsWith('partialend-of-stream'));
  });
});

test('hidden input after prompts that ask for a secret; ordinary prompts are not hidden', async () => {
  await withRecorder(async (rec, events) => {
    const t = new TerminalRecorder(rec, 0);
    const prompts = ['[sudo] password for alice: ', 'Enter passphrase (empty for no passphrase): ', 'Password for user app: ', 'Enter PIN: ', 'Token: '];
    for (const p of prompts) {
      t.output(Buffer.from(`$ cmd\r\n${p}`));
      await t.input(Buffer.from('s3cr'));
      await t.input(Buffer.from('et-1\r'));
      t.output(Buffer.from('\r\nok\r\n$ '));
    }
    t.output(Buffer.from('$ '));
    await t.input(Buffer.from('ls -la\r'));
    t.output(Buffer.from('Continue? [y/N] '));
    await t.input(Buffer.from('y\r'));
    const evs = await events();
    const input = evs.filter((e) => e.type === 'term.in');
    assert.ok(!JSON.stringify(evs).includes('s3cr'), 'no piece of a hidden answer is stored');
    assert.equal(input.filter((e) => e.data.hidden === 4).length, prompts.length * 2);
    assert.deepEqual(input.slice(0, 2).map((e) => e.data.d), ['[hidden input: 4 bytes]', '[hidden input: 4 bytes]\r']);
    assert.ok(input.some((e) => e.data.d === 'ls -la\r'), 'typed after a shell prompt: recorded');
    assert.ok(input.some((e) => e.data.d === 'y\r'), 'an ordinary question: recorded');
  });
});

test('input: a token typed key by key is recorded as its prefix and masks; ordinary typing as typed', async () => {
  await withRecorder(async (rec, events) => {
    const t = new TerminalRecorder(rec, 0);
    t.output(Buffer.from('$ '));
    for (const key of `export GITHUB_TOKEN=${TOKEN}\r`) await t.input(Buffer.from(key));
    for (const key of 'ls -la\r') await t.input(Buffer.from(key));
    const evs = await events();
    const typed = evs.filter((e) => e.type === 'term.in').map((e) => String(e.data.d)).join('');
    assert.ok(!JSON.stringify(evs).includes(TOKEN.slice(4, 12)), typed);
    assert.match(typed, /^export GITHUB_TOKEN(\[masked:[a-z_]+\])+\rls -la\r$/);
    assert.ok(evs.some((e) => e.type === 'term.in' && Array.isArray(e.data.masked)), 'masked keystrokes note it');
  });
});

