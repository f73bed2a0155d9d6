// Asks a target's upload-pack for the history between commits, over any byte stream that is
// connected to one (an SSH exec channel; smart HTTP uses its own two requests). See
// docs/git-push-protection.md for what the probe can and cannot prove.
import type { Duplex } from 'node:stream';
import { AdvertisementReader } from './refs.ts';
import { buildUploadPackProbe, probeOptionsFor, UploadPackResponseReader } from './upload-pack.ts';
import { inspectPack } from './pack-stream.ts';

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
    // Once the reply is complete the target may close while its pack is still being read.
    let complete = false;
    stream.on('error', () => { if (!complete) finish(null); });
    stream.on('close', () => { if (!complete) finish(null); });
    stream.on('data', (chunk: Buffer) => {
      if (complete) return;
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
        // Read off the event loop (the reply can be large when the target offers no filter).
        if (reply.done && !complete) {
          complete = true;
          inspectPack(reply.pack!, ad.result!.objectFormat).then((r) => finish(r.commits), () => finish(null));
        }
      } catch {
        finish(null);
      }
    });
  });
}
