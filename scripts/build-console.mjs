// Builds the web console (console/ → console/dist) with Vite. Run by `npm install` (postinstall)
// and by `npm run build:console`; skipped when the build is newer than every source file, so a
// repeated install costs nothing. The gateway serves console/dist (src/api/console-assets.ts).
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'console');
const built = path.join(root, 'dist', 'index.html');

function newest(dir) {
  let t = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.name === 'dist' || entry.name === 'node_modules') continue;
    const p = path.join(dir, entry.name);
    t = Math.max(t, entry.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

if (!process.argv.includes('--force') && existsSync(built) && statSync(built).mtimeMs >= newest(root)) {
  console.log('console: up to date');
  process.exit(0);
}
let vite;
try {
  vite = await import('vite');
} catch {
  console.warn('console: vite is not installed, so the web console was not built (npm install without --omit=dev builds it)');
  process.exit(0);
}
const started = Date.now();
await vite.build({ configFile: path.join(root, 'vite.config.ts') });
console.log(`console: built into console/dist in ${((Date.now() - started) / 1000).toFixed(1)} s`);
