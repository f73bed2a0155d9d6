// SFTP v3 file attributes (ATTRS, draft-ietf-secsh-filexfer-02 §5), as SETSTAT, FSETSTAT,
// lsetstat, MKDIR and OPEN carry them: what a request would change, in the form the record keeps.
import type { SftpReader } from './sftp-framer.ts';

const ATTR = { SIZE: 0x1, UIDGID: 0x2, PERMISSIONS: 0x4, ACMODTIME: 0x8, EXTENDED: 0x80000000 } as const;

/** Attributes a request sets (absent fields are left alone by the server). */
export interface SftpAttrs {
  /** A new size: truncates or extends the file. */
  size?: number;
  uid?: number;
  gid?: number;
  /** Permission bits in octal, as chmod takes them ('0640'). */
  mode?: string;
  /** Seconds since the epoch. */
  atime?: number;
  mtime?: number;
  /** Names of extended attributes (their values are not kept). */
  extended?: string[];
}

/** Reads one ATTRS structure; throws SftpProtocolError when it runs past the packet. */
export function readAttrs(r: SftpReader): SftpAttrs {
  const flags = r.uint32();
  const attrs: SftpAttrs = {};
  if (flags & ATTR.SIZE) attrs.size = r.uint64();
  if (flags & ATTR.UIDGID) {
    attrs.uid = r.uint32();
    attrs.gid = r.uint32();
  }
  if (flags & ATTR.PERMISSIONS) attrs.mode = (r.uint32() & 0o7777).toString(8).padStart(4, '0');
  if (flags & ATTR.ACMODTIME) {
    attrs.atime = r.uint32();
    attrs.mtime = r.uint32();
  }
  if (flags & ATTR.EXTENDED) {
    const count = r.uint32();
    const names: string[] = [];
    // Each pair takes at least 8 bytes, so a hostile count runs out of packet quickly.
    for (let i = 0; i < count; i++) {
      names.push(r.string());
      r.bytes();
    }
    attrs.extended = names;
  }
  return attrs;
}
