// Agent forwarding, when a connection allows it: the target's requests for the user's SSH agent
// (auth-agent@openssh.com channels) are relayed to the client, which answers them with its own
// agent. The gateway never holds or uses the user's keys; it only carries the channel and
// records each use, durably before the channel to the client is opened. ssh2's server side has no public call to open this channel type towards the
// client, so it is opened here the same way ssh2 opens its other server-initiated channels.
import ssh2, { type Connection as SshConnection } from 'ssh2';
import type { Duplex } from 'node:stream';

// Channel window and packet size: the values ssh2 uses for the channels it opens itself.
const MAX_WINDOW = 2 * 1024 * 1024;
const PACKET_SIZE = 32 * 1024;

interface ServerInternals {
  _chanMgr: { add(cb: unknown): number };
  _protocol: { openssh_authAgent(chan: number, window: number, packetSize: number): void };
}

export class AgentRelay extends ssh2.BaseAgent {
  private readonly client: SshConnection;
  private readonly onOpen: (result: { ok: boolean; message?: string; channel?: Duplex }) => void;
  /** Records the use before the channel opens; a rejection refuses the target's request. */
  private readonly beforeOpen: () => Promise<void> | undefined;
  /** Set once the client asked for agent forwarding on a channel of this connection. */
  requested = false;

  constructor(client: SshConnection, onOpen: AgentRelay['onOpen'], beforeOpen: AgentRelay['beforeOpen'] = () => undefined) {
    super();
    this.client = client;
    this.onOpen = onOpen;
    this.beforeOpen = beforeOpen;
  }

  // The relay holds no identities: it is never used to sign in to the target.
  getIdentities(cb: (err: Error | undefined, keys?: Buffer[]) => void): void {
    cb(undefined, []);
  }

  sign(_key: unknown, _data: Buffer, optionsOrCb: unknown, cb?: (err?: Error) => void): void {
    const done = (typeof optionsOrCb === 'function' ? optionsOrCb : cb) as (err?: Error) => void;
    done(new Error('the gateway does not sign with forwarded agents'));
  }

  /** Called by ssh2 when the target opens an agent channel: open one to the client and splice. */
  override getStream(cb: (err: Error | undefined, stream?: Duplex) => void): void {
    if (!this.requested) {
      this.onOpen({ ok: false, message: 'the client did not ask for agent forwarding' });
      return cb(new Error('agent forwarding not requested'));
    }
    let recorded: Promise<void> | undefined;
    try {
      recorded = this.beforeOpen();
    } catch (err) {
      recorded = Promise.reject(err as Error);
    }
    if (!recorded) return this.open(cb);
    recorded.then(() => this.open(cb), () => {
      this.onOpen({ ok: false, message: 'the gateway cannot record right now; not opened' });
      cb(new Error('cannot record the agent channel'));
    });
  }

  private open(cb: (err: Error | undefined, stream?: Duplex) => void): void {
    const internals = this.client as unknown as ServerInternals;
    const wrapper = Object.assign((err: Error | undefined, channel?: Duplex) => {
      this.onOpen(err ? { ok: false, message: err.message } : { ok: true, channel });
      cb(err, channel);
    }, { type: 'auth-agent@openssh.com' });
    const local = internals._chanMgr.add(wrapper);
    if (local === -1) return wrapper(new Error('no free channels'));
    internals._protocol.openssh_authAgent(local, MAX_WINDOW, PACKET_SIZE);
  }
}
