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
