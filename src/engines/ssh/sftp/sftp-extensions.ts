// SFTP extended requests (SSH_FXP_EXTENDED) by what they do to the target. Those known to change
// it are recorded with their arguments, before they are forwarded; those known to only read pass
// unrecorded, like STAT or READDIR. Any other name may change anything (the server defines it):
// it is recorded as an unknown extended request, gated like every other change, never let
// through unseen. (Closing the channel instead would break clients as soon as a server
// advertises a new extension; recording it keeps the trail whole and the client working.)

/** Extended requests that only read (OpenSSH's set, and the filexfer drafts' read-only ones). */
const READ_ONLY = new Set([
  'limits@openssh.com',
  'statvfs@openssh.com',
  'fstatvfs@openssh.com',
  'expand-path@openssh.com',
  'home-directory',
  'users-groups-by-id@openssh.com',
  // Flushes a handle already open (its writes were recorded); changes no content.
  'fsync@openssh.com',
  'check-file-name',
  'check-file-handle',
  'space-available',
  'vendor-id',
]);

/** Extended requests the tracker parses and records as the change they are. */
export type KnownChange = 'posix-rename@openssh.com' | 'hardlink@openssh.com' | 'lsetstat@openssh.com' | 'copy-data';
const KNOWN_CHANGES = new Set<string>(['posix-rename@openssh.com', 'hardlink@openssh.com', 'lsetstat@openssh.com', 'copy-data']);

export function classifyExtended(name: string): { kind: 'read-only' } | { kind: 'change'; name: KnownChange } | { kind: 'unknown' } {
  if (READ_ONLY.has(name)) return { kind: 'read-only' };
  if (KNOWN_CHANGES.has(name)) return { kind: 'change', name: name as KnownChange };
  return { kind: 'unknown' };
}
