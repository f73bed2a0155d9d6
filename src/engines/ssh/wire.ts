// Small helpers for SSH wire-format values.

/** The key type named inside an SSH public key blob (a length-prefixed string first). */
export function keyTypeOfBlob(blob: Buffer): string {
  if (blob.length < 4) return 'unknown';
  const len = blob.readUInt32BE(0);
  if (len > 64 || 4 + len > blob.length) return 'unknown';
  return blob.toString('latin1', 4, 4 + len);
}
