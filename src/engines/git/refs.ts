// The server's opening message: the v0/v1 ref advertisement of git-upload-pack and
// git-receive-pack (also the body of smart HTTP info/refs, behind a "# service=" header), or the
// protocol v2 capability advertisement.

import { GitProtocolError, PktLineReader, pktText, type PktLine } from './pkt-line.ts';

export type ObjectFormat = 'sha1' | 'sha256';

export function hashHexLength(format: ObjectFormat): number {
  return format === 'sha256' ? 64 : 40;
}

export function zeroId(format: ObjectFormat): string {
  return '0'.repeat(hashHexLength(format));
}

const HEX_ID = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

export function isObjectId(s: string): boolean {
  return HEX_ID.test(s);
}

export function isZeroId(s: string): boolean {
  return /^0+$/.test(s);
}

/** The value of a `name=value` capability, or undefined. */
export function capabilityValue(capabilities: Iterable<string>, name: string): string | undefined {
  const prefix = name + '=';
  for (const c of capabilities) if (c.startsWith(prefix)) return c.slice(prefix.length);
  return undefined;
}

export function hasCapability(capabilities: Iterable<string>, name: string): boolean {
  const prefix = name + '=';
  for (const c of capabilities) if (c === name || c.startsWith(prefix)) return true;
  return false;
}

export interface RefAdvertisement {
  /** 0 unless the server opened with "version 1" / "version 2". */
  version: 0 | 1 | 2;
  /** From a smart HTTP "# service=git-..." header, when present. */
  service: string | null;
  /** ref name → object id, in advertised order ("^{}" peeled entries are in `peeled`). */
  refs: Map<string, string>;
  /** ref name → the object an annotated tag peels to (upload-pack's "refs/tags/x^{}" lines). */
  peeled: Map<string, string>;
  /** Capabilities from the first ref line (v0/v1) or the capability lines (v2). */
  capabilities: string[];
  objectFormat: ObjectFormat;
  /** symref=HEAD:refs/heads/main capabilities, as HEAD → refs/heads/main. */
  symrefs: Map<string, string>;
  /** "shallow <id>" lines: the server repository is shallow. */
  shallow: string[];
  /** ".have" lines: objects of alternate repositories receive-pack says it has. */
  haves: string[];
}

// One line at a time; returns true once the advertisement is complete (at its closing flush).
class AdvertisementParser {
  readonly ad: RefAdvertisement = {
    version: 0,
    service: null,
    refs: new Map(),
    peeled: new Map(),
    capabilities: [],
    objectFormat: 'sha1',
    symrefs: new Map(),
    shallow: [],
    haves: [],
  };
  private sawAny = false;
  private inServiceHeader = false;
  private capsSeen = false;
  private idLength = 0;

  line(line: PktLine): boolean {
    if (line.kind !== 'data') {
      if (line.kind !== 'flush') throw new GitProtocolError(`unexpected ${line.kind} packet in ref advertisement`);
      if (this.inServiceHeader) {
        this.inServiceHeader = false;
        return false;
      }
      this.finish();
      return true;
    }
    const text = pktText(line.payload, 'latin1');
    const first = !this.sawAny;
    this.sawAny = true;
    if (first && text.startsWith('# service=')) {
      this.ad.service = text.slice('# service='.length);
      this.inServiceHeader = true;
      this.sawAny = false;
      return false;
    }
    if (this.inServiceHeader) throw new GitProtocolError(`expected flush after smart HTTP service header, got ${JSON.stringify(text)}`);
    if (text.startsWith('ERR ')) throw new GitProtocolError(`remote error: ${text.slice(4)}`);
    if (first && (text === 'version 1' || text === 'version 2')) {
      this.ad.version = text === 'version 1' ? 1 : 2;
      this.sawAny = text === 'version 2'; // v1 is followed by an ordinary v0 advertisement
      return false;
    }
    if (this.ad.version === 2) {
      this.ad.capabilities.push(text);
      return false;
    }
    if (text.startsWith('shallow ')) {
      this.ad.shallow.push(this.id(text.slice(8), text));
      return false;
    }
    const nul = text.indexOf('\0');
    const refPart = nul >= 0 ? text.slice(0, nul) : text;
    if (nul >= 0) {
      if (this.capsSeen) throw new GitProtocolError('capabilities sent twice in ref advertisement');
      this.capsSeen = true;
      for (const c of text.slice(nul + 1).split(' ')) if (c !== '') this.ad.capabilities.push(c);
    }
    const sp = refPart.indexOf(' ');
    if (sp < 0) throw new GitProtocolError(`malformed ref advertisement line ${JSON.stringify(text.slice(0, 200))}`);
    const id = this.id(refPart.slice(0, sp), text);
    const name = refPart.slice(sp + 1);
    if (name === '') throw new GitProtocolError(`malformed ref advertisement line ${JSON.stringify(text.slice(0, 200))}`);
    if (name === 'capabilities^{}') return false; // empty repository: carries capabilities only
    if (name === '.have') {
      this.ad.haves.push(id);
      return false;
    }
    if (name.endsWith('^{}')) this.ad.peeled.set(name.slice(0, -3), id);
    else this.ad.refs.set(name, id);
    return false;
  }

  private id(s: string, text: string): string {
    if (!isObjectId(s)) throw new GitProtocolError(`malformed object id in ref advertisement line ${JSON.stringify(text.slice(0, 200))}`);
    if (this.idLength === 0) this.idLength = s.length;
    else if (s.length !== this.idLength) throw new GitProtocolError('ref advertisement mixes object id lengths');
    return s;
  }

  private finish(): void {
    const caps = this.ad.capabilities;
    const fmt = capabilityValue(caps, 'object-format');
    if (fmt !== undefined) {
      if (fmt !== 'sha1' && fmt !== 'sha256') throw new GitProtocolError(`unsupported object-format ${fmt}`);
      this.ad.objectFormat = fmt;
    }
    if (this.idLength !== 0 && this.idLength !== hashHexLength(this.ad.objectFormat)) {
      throw new GitProtocolError(`object ids are ${this.idLength} hex digits but object-format is ${this.ad.objectFormat}`);
    }
    for (const c of caps) {
      if (!c.startsWith('symref=')) continue;
      const v = c.slice(7);
      const colon = v.indexOf(':');
      if (colon > 0) this.ad.symrefs.set(v.slice(0, colon), v.slice(colon + 1));
    }
  }
}

/** Parses a whole advertisement given as pkt-lines (up to and including its closing flush). */
export function parseAdvertisement(lines: Iterable<PktLine>): RefAdvertisement {
  const p = new AdvertisementParser();
  for (const line of lines) {
    if (p.line(line)) return p.ad;
  }
  throw new GitProtocolError('ref advertisement ended without a flush packet');
}

/**
 * Incremental parser for the server→client byte stream: feed bytes until `result` is set; the
 * bytes after the advertisement (e.g. a report-status or an upload-pack reply) are then available
 * from takeRemainder().
 */
export class AdvertisementReader {
  private readonly reader = new PktLineReader();
  private readonly parser = new AdvertisementParser();
  result: RefAdvertisement | null = null;

  push(chunk: Buffer): void {
    this.reader.push(chunk);
    if (this.result !== null) return; // later bytes wait for takeRemainder()
    for (let line = this.reader.next(); line !== null; line = this.reader.next()) {
      if (this.parser.line(line)) {
        this.result = this.parser.ad;
        return;
      }
    }
  }

  get done(): boolean {
    return this.result !== null;
  }

  /** Bytes received after the advertisement's closing flush. */
  takeRemainder(): Buffer {
    return this.reader.takeRemainder();
  }
}
