// Two ways a sign-in fails: it is refused (the message says why, and is shown to the person in the
// browser and in the terminal), or the identity provider could not be reached (try again later).

/** The sign-in was checked and refused; the message is safe to show the person. */
export class SignInRefusal extends Error {}

/** The identity provider could not be asked (discovery or token endpoint unreachable). */
export class SignInUnavailable extends Error {}
