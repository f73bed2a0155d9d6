// A small tmpfs of the test's own, for filling the recording store's disk without touching the
// machine's (needs root, as the suite runs in CI).
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export interface SmallDisk {
  /** An empty directory on the small disk, for a gateway's data. */
  dataDir: string;
  /** Writes until the disk is full (ENOSPC). */
  fill(): void;
  /** Frees what fill() wrote. */
  free(): void;
  unmount(): void;
}

export function mountSmallDisk(prefix: string, sizeMb = 24): SmallDisk {
  const mountPoint = mkdtempSync(path.join(tmpdir(), prefix));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMb}m`, 'tmpfs', mountPoint]);
  const dataDir = path.join(mountPoint, 'data');
  mkdirSync(dataDir);
  const filler = path.join(mountPoint, 'filler');
  return {
    dataDir,
    fill() {
      const fd = openSync(filler, 'w');
      const block = Buffer.alloc(256 * 1024, 1);
      try {
        for (;;) writeSync(fd, block);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      } finally {
        closeSync(fd);
      }
    },
    free() {
      unlinkSync(filler);
    },
    unmount() {
      try { execFileSync('umount', [mountPoint]); } catch { /* not mounted */ }
      rmSync(mountPoint, { recursive: true, force: true });
    },
  };
}
