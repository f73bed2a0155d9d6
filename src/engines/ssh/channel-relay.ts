// Moves bytes between the client's channel and the target's channel, with backpressure both ways
// (a slow reader pauses the other side's window, never a growing buffer) and hooks where the
// recording stages observe the stream. An input hook may return a promise: the chunk is then
// held until it resolves, which is how record-before-forward works for typed input and for
// file operations. EOF, close and the exit status are queued behind held chunks, so a held chunk
// is never cut off by the end of its channel. Output hooks may return a replacement (the client's
// masking, output-masking.ts); what such a hook holds back is written on `flush`.
import type { Duplex, Readable, Writable } from 'node:stream';
import type { ClientChannel, ServerChannel } from 'ssh2';

export interface RelayHooks {
  /**
   * Client → target bytes. A returned promise holds the chunk until it settles (rejecting ends the
   * relay); a returned (or resolved) Buffer is forwarded instead of the chunk (a request the
   * policy refused taken out, an incomplete one kept back).
   */
  input?(chunk: Buffer): HookResult;
  /** Target → client stdout bytes, seen before they are written to the client; a returned Buffer is written instead. */
  output?(chunk: Buffer): void | Buffer;
  /** Target → client stderr bytes; a returned Buffer is written instead. */
  stderr?(chunk: Buffer): void | Buffer;
  /**
   * Called when the target's stdout or stderr ends, and again before its exit status is handed
   * on: an output hook that holds bytes back (the client's masking) writes them now, in order.
   */
  flush?(): void;
  /** Client → target bytes that passed `input` (are on record) but never reached the target. */
  undelivered?(chunk: Buffer, reason: string): void;
}

/**
 * A hook refuses the stream (a tracker that can no longer check it): the channel is closed and
 * the client is told `message`, which says why. Thrown (or rejected) by a hook.
 */
export class ChannelAbortError extends Error {}

/** What a hook gives back: nothing (forward the chunk), bytes to forward instead, or a promise of either. */
export type HookResult = void | Buffer | Promise<void | Buffer>;

export interface ExitInfo { code: number | null; signal: string | null; coreDumped?: boolean; message?: string }

/** A channel as ssh2 exposes it on either side: a duplex with a separate stderr stream. */
export type SshChannel = Duplex & { stderr: Readable | Writable };

/** A running pump, for sequencing what must come after the data (EOF, close, exit status). */
export interface Pump {
  /** Settles once every chunk received so far has been written (or given up as undelivered). */
  idle(): Promise<void>;
}

/**
 * Pumps `from` into `to`, pausing `from` while `to` is full. Chunks whose hook returns a promise
 * are held until it resolves; later chunks queue behind them, so order is preserved. A chunk
 * that passed its hook (so is on record) but cannot be written is handed to `onUndelivered`;
 * after a hook rejects or throws, nothing more is recorded or sent.
 */
export function pump(from: Readable, to: Writable, hook: ((chunk: Buffer) => HookResult) | undefined,
  onHookError: (err: Error) => void, onUndelivered?: (chunk: Buffer, reason: string) => void): Pump {
  let held = 0;
  let failed = false;
  let tail: Promise<void> = Promise.resolve();
  const resume = () => { if (held === 0 && !failed && !to.writableNeedDrain) from.resume(); };
  const write = (chunk: Buffer) => {
    if (chunk.length === 0) return;
    if (!to.writable) return onUndelivered?.(chunk, 'the target side of the channel had already closed');
    if (!to.write(chunk)) {
      from.pause();
      to.once('drain', resume);
    }
  };
  from.on('data', (chunk: Buffer) => {
    if (failed) return;
    let pending: HookResult;
    // A hook that throws refuses its chunk like one that rejects: never an exception out of 'data'.
    try {
      pending = hook?.(chunk);
    } catch (err) {
      const refused = Promise.reject(err as Error);
      refused.catch(() => undefined); // handled below, once the chunks before it are through
      pending = refused;
    }
    if (Buffer.isBuffer(pending)) {
      if (held === 0) return write(pending);
      pending = Promise.resolve(pending);
    }
    if (!pending && held === 0) return write(chunk);
    held++;
    from.pause();
    const recorded: Promise<void | Buffer> = pending ?? Promise.resolve();
    tail = tail.then(() => recorded).then((replacement) => {
      held--;
      const out = replacement ?? chunk;
      if (failed) return out.length > 0 ? onUndelivered?.(out, 'an earlier chunk could not be recorded') : undefined;
      write(out);
      resume();
    }, (err: Error) => {
      held--;
      onUndelivered?.(chunk, err instanceof ChannelAbortError ? `the gateway closed the channel: ${err.message}` : 'its record could not be committed');
      if (failed) return;
      failed = true;
      onHookError(err);
    });
  });
  // The source may have been paused while its channel was being set up.
  from.resume();
  return { idle: () => tail };
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
