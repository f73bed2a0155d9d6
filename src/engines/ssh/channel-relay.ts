// Moves bytes between the client's channel and the target's channel, with backpressure both ways
// (a slow reader pauses the other side's window, never a growing buffer) and hooks where the
// recording stages observe the stream. An input hook may return a promise: the chunk is then
// held until it resolves, which is how record-before-forward works for typed input and for
// file operations.
import type { Duplex, Readable, Writable } from 'node:stream';
import type { ClientChannel, ServerChannel } from 'ssh2';

export interface RelayHooks {
  /** Client → target bytes. A returned promise holds the chunk until it settles (rejecting ends the relay). */
  input?(chunk: Buffer): void | Promise<void>;
  /** Target → client stdout bytes, seen before they are written to the client. */
  output?(chunk: Buffer): void;
  /** Target → client stderr bytes. */
  stderr?(chunk: Buffer): void;
}

export interface ExitInfo { code: number | null; signal: string | null; coreDumped?: boolean; message?: string }

/** A channel as ssh2 exposes it on either side: a duplex with a separate stderr stream. */
export type SshChannel = Duplex & { stderr: Readable | Writable };

/**
 * Pumps `from` into `to`, pausing `from` while `to` is full. With an async hook, one chunk at a
 * time is in flight, so order is preserved.
 */
export function pump(from: Readable, to: Writable, hook: ((chunk: Buffer) => void | Promise<void>) | undefined, onHookError: (err: Error) => void): void {
  let waiting = false;
  const write = (chunk: Buffer) => {
    if (!to.writable) return;
    if (!to.write(chunk)) {
      from.pause();
      to.once('drain', () => { if (!waiting) from.resume(); });
    }
  };
  from.on('data', (chunk: Buffer) => {
    const pending = hook?.(chunk);
    if (!pending) return write(chunk);
    waiting = true;
    from.pause();
    pending.then(() => {
      waiting = false;
      write(chunk);
      if (!to.writableNeedDrain) from.resume();
    }, (err: Error) => onHookError(err));
  });
  // The source may have been paused while its channel was being set up.
  from.resume();
}

/** The target channel's exit status or signal, settled when the channel closes. */
export function watchExit(upstream: ClientChannel): Promise<ExitInfo> {
  let exit: ExitInfo = { code: null, signal: null };
  upstream.on('exit', (code: number | null, signal?: string, coreDumped?: boolean, message?: string) => {
    exit = { code, signal: signal ?? null, ...(coreDumped ? { coreDumped } : {}), ...(message ? { message } : {}) };
  });
  return new Promise((resolve) => upstream.on('close', () => resolve(exit)));
}

/** Hands the target's exit status (or signal) on to the client, then ends its channel. */
export function endWithExit(client: ServerChannel, exit: ExitInfo): void {
  if (!client.writable) return;
  // ssh2 reports "SIGTERM"; the protocol names the signal without the prefix.
  if (exit.code !== null) client.exit(exit.code);
  else if (exit.signal) client.exit(exit.signal.replace(/^SIG/, ''), exit.coreDumped ?? false, exit.message ?? '');
  client.end();
}
