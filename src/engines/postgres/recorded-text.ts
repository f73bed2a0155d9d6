// Statement text as recorded, bounded: a statement longer than the limit is recorded as its first
// bytes plus the length and SHA-256 of the whole text as sent, so the record stays truthful (the
// hash names exactly what ran) without the recording — canonical JSON, hash chain, store rows —
// copying a 50 MB statement several times over.
import { createHash } from 'node:crypto';
import type { ClientEncoding, RecordedText } from './codec/client-encoding.ts';

/** Statement text kept in the record unless configured otherwise (postgres.recorded_text_bytes). */
export const DEFAULT_RECORDED_TEXT_BYTES = 64 * 1024;

/** Text of record; `truncated` when only the first bytes are kept. */
export interface BoundedText extends RecordedText {
  truncated?: { bytes: number; sha256: string };
}

/** The statement in buf[start, end): exact when it fits in `limit` bytes, else its prefix, length and hash. */
export function boundedText(encoding: ClientEncoding, buf: Buffer, start: number, end: number, limit: number): BoundedText {
  if (end - start <= limit) return encoding.exact(buf, start, end);
  // Cut on a character boundary where the encoding allows telling (UTF-8 continuation bytes).
  let cut = start + limit;
  if (encoding.isUtf8) while (cut > start && (buf[cut]! & 0xc0) === 0x80) cut--;
  const prefix = encoding.exact(buf, start, cut);
  const sha256 = createHash('sha256').update(buf.subarray(start, end)).digest('hex');
  return { ...prefix, truncated: { bytes: end - start, sha256 } };
}

/** The same bound for text known only as a string (a PREPARE or DECLARE's statement, from the parser). */
export function boundedString(text: string, limit: number): BoundedText {
  if (text.length <= limit / 3 || Buffer.byteLength(text, 'utf8') <= limit) return { text };
  const bytes = Buffer.from(text, 'utf8');
  let cut = limit;
  while (cut > 0 && (bytes[cut]! & 0xc0) === 0x80) cut--;
  return { text: bytes.toString('utf8', 0, cut), truncated: { bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') } };
}

/** The event fields for a bounded text: text (and raw), plus textTruncated, textBytes, textSha256. */
export function truncationFields(t: { truncated?: BoundedText['truncated'] }): Record<string, unknown> {
  if (!t.truncated) return {};
  return { textTruncated: true, textBytes: t.truncated.bytes, textSha256: t.truncated.sha256 };
}
