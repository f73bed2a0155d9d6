// Plays a recorded terminal session back in the user's terminal with its original timing
// (`gatehouse sessions replay ID` for SSH sessions). Output events are written as they were
// received; input is not echoed again (the terminal's own echo is part of the output). The
// output bytes are the terminal and are written as recorded; the headers around them are escaped.
import { castEvents, terminalChannels, type TerminalEvent } from '../recorder/asciicast.ts';
import { visible } from './format.ts';

export interface PlayOptions {
  /** Playback speed factor (2 = twice as fast). */
  speed: number;
  /** Print everything at once, without waiting. */
  noWait: boolean;
  /** Longest pause kept, in seconds (idle stretches are shortened to this). */
  maxIdle: number;
  channel?: number;
  write(text: string): void;
  sleep(ms: number): Promise<void>;
}

/** Returns the number of terminal channels played (0 when the session has none). */
export async function playTerminal(events: TerminalEvent[], opts: PlayOptions): Promise<number> {
  const channels = terminalChannels(events).filter((c) => opts.channel === undefined || c.channel === opts.channel);
  for (const ch of channels) {
    if (channels.length > 1) opts.write(`\r\n[gatehouse] channel ${ch.channel}${ch.command ? `: ${visible(ch.command)}` : ' (shell)'} ${ch.width}x${ch.height}\r\n`);
    let last = 0;
    for (const e of castEvents(events, ch)) {
      if (e.code !== 'o') continue;
      if (!opts.noWait) {
        const gap = Math.min(e.time - last, opts.maxIdle) / opts.speed;
        if (gap > 0.001) await opts.sleep(gap * 1000);
      }
      last = e.time;
      opts.write(e.data);
    }
  }
  return channels.length;
}
