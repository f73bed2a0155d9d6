// Text in the PostgreSQL protocol travels in the session's client_encoding, not necessarily
// UTF-8. Statement text, parameters, row samples and server messages are decoded with the
// encoding the server currently reports (ParameterStatus client_encoding), and whenever the
// decoding might not be exact the original bytes are kept too, so a recording never loses or
// invents what was sent (in SJIS or GBK a trail byte can be '\', so a lossy decode could
// suggest other SQL than what ran).
import { isUtf8 } from 'node:buffer';

/** Text as recorded: `raw` (base64 of the original bytes) only when `text` might not be exact. */
export interface RecordedText { text: string; raw?: string }

/** WHATWG labels for PostgreSQL's client encodings that have a single-byte, exact mapping. */
const SINGLE_BYTE: Record<string, string> = {
  WIN866: 'ibm866', WIN874: 'windows-874', WIN1250: 'windows-1250', WIN1251: 'windows-1251', WIN1252: 'windows-1252',
  WIN1253: 'windows-1253', WIN1254: 'windows-1254', WIN1255: 'windows-1255', WIN1256: 'windows-1256', WIN1257: 'windows-1257',
  WIN1258: 'windows-1258', KOI8R: 'koi8-r', KOI8U: 'koi8-u', LATIN2: 'iso-8859-2', LATIN3: 'iso-8859-3', LATIN4: 'iso-8859-4',
  LATIN5: 'windows-1254', LATIN6: 'iso-8859-10', LATIN7: 'iso-8859-13', LATIN8: 'iso-8859-14', LATIN9: 'iso-8859-15',
  LATIN10: 'iso-8859-16', ISO_8859_5: 'iso-8859-5', ISO_8859_6: 'iso-8859-6', ISO_8859_7: 'iso-8859-7', ISO_8859_8: 'iso-8859-8',
};

/** Multi-byte encodings: decoded for reading, but the bytes are always kept beside the text. */
const MULTI_BYTE: Record<string, string> = {
  SJIS: 'shift_jis', SHIFT_JIS_2004: 'shift_jis', EUC_JP: 'euc-jp', EUC_JIS_2004: 'euc-jp', GBK: 'gbk', GB18030: 'gb18030',
  EUC_CN: 'gbk', UHC: 'euc-kr', EUC_KR: 'euc-kr', BIG5: 'big5', EUC_TW: 'big5',
};

type Kind = 'utf8' | 'latin1' | 'single' | 'multi' | 'unknown';

export class ClientEncoding {
  /** PostgreSQL's name for the encoding, as the server reported it. */
  name = 'UTF8';
  private kind: Kind = 'utf8';
  private decoder: TextDecoder | null = null;

  constructor(name?: string) {
    if (name) this.set(name);
  }

  set(name: string): void {
    const upper = name.toUpperCase().replace(/-/g, '_');
    this.name = upper;
    this.decoder = null;
    if (upper === 'UTF8' || upper === 'UNICODE' || upper === 'UTF_8') { this.kind = 'utf8'; return; }
    if (upper === 'LATIN1' || upper === 'ISO_8859_1') { this.kind = 'latin1'; return; }
    const single = SINGLE_BYTE[upper];
    if (single) { this.kind = 'single'; this.decoder = new TextDecoder(single, { fatal: true }); return; }
    const multi = MULTI_BYTE[upper];
    if (multi) { this.kind = 'multi'; this.decoder = new TextDecoder(multi); return; }
    this.kind = 'unknown'; // SQL_ASCII, MULE_INTERNAL, JOHAB: no faithful decoder
  }

  get isUtf8(): boolean { return this.kind === 'utf8'; }

  /** Every byte below 0x80 is that ASCII character, and no multi-byte character has one (sql-bytes.ts). */
  get asciiCompatible(): boolean { return this.kind === 'utf8' || this.kind === 'latin1' || this.kind === 'single'; }

  /** Best-effort text, for samples and messages (bounded, not the statement of record). */
  text(buf: Buffer, start: number, end: number): string {
    switch (this.kind) {
      case 'utf8': return buf.toString('utf8', start, end);
      case 'latin1': return buf.toString('latin1', start, end);
      case 'single': case 'multi':
        if (isAscii(buf, start, end)) return buf.toString('latin1', start, end);
        try { return this.decoder!.decode(buf.subarray(start, end)); } catch { return buf.toString('latin1', start, end); }
      default: return isAscii(buf, start, end) ? buf.toString('latin1', start, end) : buf.toString('utf8', start, end);
    }
  }

  /** Text of record: decoded, with the original bytes kept whenever the decoding may not be exact. */
  exact(buf: Buffer, start: number, end: number): RecordedText {
    switch (this.kind) {
      case 'utf8': {
        const text = buf.toString('utf8', start, end);
        // U+FFFD appears for invalid input (or was sent literally): only then is a check needed.
        if (text.includes('\uFFFD') && !isUtf8(buf.subarray(start, end))) return { text, raw: buf.toString('base64', start, end) };
        return { text };
      }
      case 'latin1': return { text: buf.toString('latin1', start, end) };
      case 'single':
        try { return { text: this.decoder!.decode(buf.subarray(start, end)) }; } catch { /* an unmapped byte */ }
        return { text: buf.toString('latin1', start, end), raw: buf.toString('base64', start, end) };
      default: {
        if (isAscii(buf, start, end)) return { text: buf.toString('latin1', start, end) };
        return { text: this.text(buf, start, end), raw: buf.toString('base64', start, end) };
      }
    }
  }
}

export function isAscii(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buf[i] >= 0x80) return false;
  return true;
}
