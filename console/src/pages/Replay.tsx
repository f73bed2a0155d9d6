// A terminal channel in asciinema-player: play, pause, seek, speed and an idle-time limit. The
// recording is the gateway's (asciicast v2 built from term.* events), never the client's claim.
import { useEffect, useRef } from 'react';
import * as AsciinemaPlayer from 'asciinema-player';
import 'asciinema-player/dist/bundle/asciinema-player.css';
import { visible } from '../format.tsx';

export interface Terminal { channel: number; command: string | null; width: number; height: number; startedAt: string; events: Array<[number, string, string]> }

export function Replay({ terminal }: { terminal: Terminal }) {
  const el = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!el.current) return;
    const cast = [JSON.stringify({ version: 2, width: terminal.width, height: terminal.height }), ...terminal.events.map((e) => JSON.stringify(e))].join('\n');
    const player = AsciinemaPlayer.create({ data: cast }, el.current, { idleTimeLimit: 2, fit: 'width', preload: true, controls: true });
    return () => player.dispose();
  }, [terminal]);
  return (
    <figure className="replay">
      <figcaption>Terminal, channel {terminal.channel}{terminal.command ? ` — ${visible(terminal.command, 200)}` : ' — shell'} ({terminal.width}×{terminal.height}); Space plays/pauses, ←/→ seek, &lt;/&gt; change speed</figcaption>
      <div ref={el} data-testid={`replay-${terminal.channel}`} />
    </figure>
  );
}
