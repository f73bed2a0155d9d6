// Every sign-in through an identity provider is recorded like a session (protocol "login"): who,
// through which provider, from where, and — when refused — why. Recordings are hash-chained and
// sealed, so the audit trail of sign-ins is as tamper-evident as the sessions that follow them.
import type { Logger } from 'pino';
import type { Recorder, SessionStartInfo } from '../../recorder/recorder.ts';
import type { Identity } from '../../store/types.ts';

export interface SignInAttempt {
  provider: string;
  protocol: 'oidc' | 'saml';
  clientAddr: string;
  userAgent: string;
  /** The sign-in's user code, when known (ties the recording to what the terminal showed). */
  userCode?: string;
  /** Where `gatehouse login` ran: the address the gateway saw, the host name it claimed. */
  startedFrom?: string | null;
  startedHost?: string | null;
}

export async function recordSignIn(recorder: Recorder, log: Logger, attempt: SignInAttempt, outcome: { identity: Identity } | { refused: string }): Promise<void> {
  const identity = 'identity' in outcome ? outcome.identity : undefined;
  const info: SessionStartInfo = {
    protocol: 'login', identityId: identity?.id ?? '', identityName: identity?.name ?? '', identityKind: identity?.kind ?? 'unknown',
    clientAddr: attempt.clientAddr, applicationName: attempt.userAgent.slice(0, 200), connectionId: '', connectionName: '',
    targetHost: '', targetPort: 0, targetDatabase: '', targetUser: '', recordingMode: 'durable',
    identityClaims: identity?.claims ?? null, authMethod: attempt.provider ? `${attempt.protocol}:${attempt.provider}` : attempt.protocol,
  };
  const details = {
    ...(attempt.provider ? { provider: attempt.provider } : {}), ...(attempt.userCode ? { userCode: attempt.userCode } : {}),
    ...(attempt.startedFrom ? { startedFrom: attempt.startedFrom } : {}), ...(attempt.startedHost ? { startedHost: attempt.startedHost } : {}),
  };
  try {
    if (!identity) {
      await recorder.recordRefusal(info, details, { message: (outcome as { refused: string }).refused });
      return;
    }
    const session = await recorder.startSession(info, details);
    // Reached only once the person typed the terminal's code in the browser the provider's answer came to.
    session.append('login', { provider: attempt.provider, protocol: attempt.protocol, groups: identity.externalGroups ?? [], confirmedWith: 'user code' });
    await session.end('signed in');
  } catch (err) {
    // The store is down (then so is the sign-in, which lives there too); the log keeps the attempt.
    log.error({ err: (err as Error).message, provider: attempt.provider }, 'could not record a sign-in');
  }
}
