// Asks a target's upload-pack for the history between commits, over any byte stream that is
// connected to one (an SSH exec channel; smart HTTP uses its own two requests). See
// docs/git-push-protection.md for what the probe can and cannot prove.
import type { Duplex } from 'node:stream';
import { AdvertisementReader } from './refs.ts';
import { buildUploadPackProbe, probeOptionsFor, UploadPackResponseReader } from './upload-pack.ts';
import { readPackCommits } from './pack.ts';

/** Commit id → parent ids reachable from `tips` and not from `have`, or null when the target would not say. */
export function probeOverStream(stream: Duplex, tips: string[], have: string, timeoutMs = 30_000): Promise<Map<string, string[]> | null> {
  return new Promise((resolve) => {
    const ad = new AdvertisementReader();
    let reply: UploadPackResponseReader | null = null;
    let settled = false;
    const finish = (result: Map<string, string[]> | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stream.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    stream.on('error', () => finish(null));
    stream.on('close', () => finish(null));
    stream.on('data', (chunk: Buffer) => {
      try {
        if (reply === null) {
          ad.push(chunk);
          if (!ad.result) return;
          const options = probeOptionsFor(ad.result);
          reply = new UploadPackResponseReader({ protocol: options.protocol });
          stream.write(buildUploadPackProbe(tips, have, ad.result.objectFormat, options));
          chunk = ad.takeRemainder();
        }
        if (chunk.length) reply.push(chunk);
        if (reply.done) finish(readPackCommits(reply.pack!, ad.result!.objectFormat).commits);
      } catch {
        finish(null);
      }
    });
  });
}
