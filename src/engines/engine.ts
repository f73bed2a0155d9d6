// The contract every protocol engine (PostgreSQL now; SSH, MySQL, HTTP later) implements, and
// the shared stages the gateway hands to each one. Engines own framing and protocol logic only:
// identity, access, recording and target dialing are never re-implemented per protocol.
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Dialer } from '../connector/dialer.ts';
import type { SecretBox } from '../crypto/secret-box.ts';
import type { IdentityService } from '../identity/identity-service.ts';
import type { PolicyService } from '../policy/policy-service.ts';
import type { ApprovalService } from '../approvals/approval-service.ts';
import type { Recorder } from '../recorder/recorder.ts';
import type { Admission } from '../access/admission.ts';
import type { Store } from '../store/types.ts';
import type { ListenAddress } from '../util/address.ts';

export interface EngineContext {
  store: Store;
  identity: IdentityService;
  recorder: Recorder;
  /** Token → connection → grant → session start, and the registry of open sessions (src/access/admission.ts). */
  admission: Admission;
  secrets: SecretBox;
  /** Decisions on actions before they reach the target (src/policy/): engines ask, and turn the verdict into their protocol's error or wait. */
  policy: PolicyService;
  /** Where an action the policy holds waits for people to decide (src/approvals/). */
  approvals: ApprovalService;
  dialer: Dialer;
  tls: { cert: string; key: string };
  log: Logger;
}

export interface Engine {
  /** Protocol name as it appears in recordings ("postgres", "ssh", …). */
  readonly protocol: string;
  /** Starts the native listener; resolves with the bound address (port 0 picks a free one). */
  listen?(address: ListenAddress): Promise<ListenAddress>;
  /** Engines carried over HTTP (Git's smart HTTP) mount their routes on the API's listener instead. */
  routes?(app: FastifyInstance): Promise<void>;
  /** Stops accepting, ends open sessions with a protocol-native goodbye, and waits for them. */
  close(): Promise<void>;
  /** Forget cached state about a connection (pooled upstreams) after it changes or is removed. */
  connectionChanged?(connectionId: string): void;
}
