// Two ways an exchange fails: the token is refused (the caller's problem, said plainly), or the
// gateway could not check it (the issuer's keys are unreachable: retry later).

/** The token was checked and refused; the message says why and is safe to show the caller. */
export class WorkloadRefusal extends Error {}

/** The token could not be checked right now (e.g. the issuer's JWKS cannot be fetched). */
export class WorkloadUnavailable extends Error {}
