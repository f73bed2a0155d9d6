// A minimal POSIX ustar writer: regular files and directories with short names, enough to hand
// out an export bundle as one file that `tar -x` (GNU, BSD, busybox) unpacks.
export interface TarEntry { name: string; data?: Buffer; dir?: boolean; mtime: number }

const BLOCK = 512;

function field(buf: Buffer, offset: number, length: number, value: string): void {
  buf.write(value, offset, length, 'utf8');
}

function octal(buf: Buffer, offset: number, length: number, value: number): void {
  field(buf, offset, length, value.toString(8).padStart(length - 1, '0') + '\0');
}

function header(e: TarEntry): Buffer {
  if (Buffer.byteLength(e.name) > 100) throw new Error(`tar: name too long: ${e.name}`);
  const h = Buffer.alloc(BLOCK, 0);
  field(h, 0, 100, e.name);
  octal(h, 100, 8, e.dir ? 0o755 : 0o644);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, e.dir ? 0 : (e.data?.length ?? 0));
  octal(h, 136, 12, e.mtime);
  h.fill(0x20, 148, 156); // checksum counted as spaces
  field(h, 156, 1, e.dir ? '5' : '0');
  field(h, 257, 6, 'ustar\0');
  field(h, 263, 2, '00');
  let sum = 0;
  for (const b of h) sum += b;
  field(h, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  return h;
}

export function tarArchive(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    parts.push(header(e));
    if (!e.dir && e.data && e.data.length > 0) {
      parts.push(e.data);
      const pad = (BLOCK - (e.data.length % BLOCK)) % BLOCK;
      if (pad) parts.push(Buffer.alloc(pad, 0));
    }
  }
  parts.push(Buffer.alloc(BLOCK * 2, 0));
  return Buffer.concat(parts);
}

export interface TarFile { name: string; dir: boolean; data: Buffer }

const SAFE_NAME = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*\/?$/;

function text(buf: Buffer, offset: number, length: number): string {
  const raw = buf.subarray(offset, offset + length);
  const end = raw.indexOf(0);
  return raw.subarray(0, end < 0 ? raw.length : end).toString('utf8');
}

/**
 * Reads a ustar archive of regular files and directories (what tarArchive writes, or tar -c of
 * such a tree). Anything else — links, devices, extended headers, names that climb out (`..`,
 * absolute) or hold other characters — is refused: an archive is untrusted input.
 */
export function readTar(buf: Buffer): TarFile[] {
  const out: TarFile[] = [];
  let at = 0;
  while (at + BLOCK <= buf.length) {
    const h = buf.subarray(at, at + BLOCK);
    if (h.every((b) => b === 0)) return out;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    if (Number.parseInt(text(h, 148, 8).trim(), 8) !== sum) throw new Error(`not a tar archive (bad header checksum at byte ${at})`);
    // POSIX ustar keeps long names' leading part in a prefix field (GNU tar's own format uses it otherwise).
    const prefix = h.subarray(257, 263).toString('latin1') === 'ustar\0' ? text(h, 345, 155) : '';
    const name = prefix ? `${prefix}/${text(h, 0, 100)}` : text(h, 0, 100);
    const type = String.fromCharCode(h[156]!);
    const size = Number.parseInt(text(h, 124, 12).trim() || '0', 8);
    if (!Number.isSafeInteger(size) || size < 0) throw new Error(`tar entry ${JSON.stringify(name)} has an invalid size`);
    if (!SAFE_NAME.test(name) || name.split('/').some((s) => s === '.' || s === '..')) throw new Error(`tar entry name ${JSON.stringify(name)} is not allowed`);
    if (type !== '0' && type !== '\0' && type !== '5') throw new Error(`tar entry ${JSON.stringify(name)} is not a regular file or directory (type ${JSON.stringify(type)})`);
    at += BLOCK;
    if (at + size > buf.length) throw new Error(`tar entry ${JSON.stringify(name)} is cut short`);
    out.push({ name: name.replace(/\/$/, ''), dir: type === '5', data: type === '5' ? Buffer.alloc(0) : Buffer.from(buf.subarray(at, at + size)) });
    at += Math.ceil(size / BLOCK) * BLOCK;
  }
  throw new Error('tar archive has no end marker (cut short)');
}
