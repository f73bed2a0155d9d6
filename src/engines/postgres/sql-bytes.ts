// A long statement's bytes as the SQL lexer reads them (SqlChars), without decoding them into a
// string first. Only for ASCII-compatible client encodings (UTF-8, LATIN1, the single-byte
// ones): there every byte below 0x80 is the ASCII character and every byte of a multi-byte
// character is 0x80 or above, so quotes, semicolons, comments and keywords fall where they do
// in the decoded text. Other encodings (SJIS, BIG5, GBK: trail bytes such as '\' below 0x80)
// are decoded as before.
import type { SqlChars } from './sql-statement-starts.ts';

export function sqlBytes(buf: Buffer, start: number, end: number): SqlChars {
  const b = buf.subarray(start, end);
  return {
    length: b.length,
    charCodeAt: (i: number) => b[i] ?? NaN,
    indexOf: (s: string, from?: number) => b.indexOf(s, from ?? 0, 'latin1'),
    slice: (from?: number, to?: number) => b.toString('latin1', from, to),
    includes: (s: string) => b.includes(s, 0, 'latin1'),
  } as SqlChars;
}

/** Whether `needle` (lower-case ASCII) occurs in `text`, ignoring ASCII case. */
export function includesCaseless(text: SqlChars, needle: string): boolean {
  const first = needle.charCodeAt(0);
  outer: for (let i = 0; i + needle.length <= text.length; i++) {
    if ((text.charCodeAt(i) | 0x20) !== first) continue;
    for (let k = 1; k < needle.length; k++) {
      const c = text.charCodeAt(i + k);
      const n = needle.charCodeAt(k);
      if (c !== n && !(n >= 97 && n <= 122 && (c | 0x20) === n)) continue outer;
    }
    return true;
  }
  return false;
}
