// The few pages a browser sees during a sign-in. Plain HTML, no scripts; everything interpolated
// is escaped.

const STYLE = 'body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}' +
  'h1{font-size:1.4rem}code{font-size:1.2rem;letter-spacing:.1em;background:#eee;padding:.1rem .4rem}.refused{color:#a00}';

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">` +
    `<title>${escapeHtml(title)}</title><style>${STYLE}</style></head><body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

export function signedInPage(identity: string, provider: string): string {
  return page('Signed in to Gatehouse', `<p>Signed in as <strong>${escapeHtml(identity)}</strong> through ${escapeHtml(provider)}.</p>` +
    '<p>Your terminal receives its token now. You may close this page.</p>');
}

/** What the person must see before a token leaves: who the provider says they are, and where the sign-in began. */
export interface ConfirmationView {
  loginId: string; secret: string; identity: string; provider: string;
  startedFrom: string | null; startedHost: string | null; startedAt: number; error?: string;
}

/**
 * The device-flow confirmation (RFC 8628 style): the sign-in's origin, and the code that only the
 * terminal that started it shows. A link sent by someone else ends here, not in their terminal.
 */
export function confirmPage(v: ConfirmationView): string {
  const host = v.startedHost ? ` calling itself <strong>${escapeHtml(v.startedHost)}</strong> (its own claim)` : '';
  const from = v.startedFrom ? `from the address <strong>${escapeHtml(v.startedFrom)}</strong>${host}` : `from an unknown address${host}`;
  return page('Confirm this sign-in', (v.error ? `<p class="refused">${escapeHtml(v.error)}</p>` : '') +
    `<p>${escapeHtml(v.provider)} says you are <strong>${escapeHtml(v.identity)}</strong>.</p>` +
    `<p>This sign-in was started with <code>gatehouse login</code> ${from} at ${escapeHtml(new Date(v.startedAt).toISOString())}.</p>` +
    '<p>If you started it, type the code that terminal shows. If you did not, or you were sent this link, cancel: ' +
    'whoever sent it would otherwise receive a token in your name.</p>' +
    '<form method="post" action="/login/confirm">' +
    `<input type="hidden" name="login" value="${escapeHtml(v.loginId)}"><input type="hidden" name="secret" value="${escapeHtml(v.secret)}">` +
    '<input name="code" autocomplete="off" autofocus placeholder="BCDF-GHJK"> ' +
    '<button type="submit" name="action" value="confirm">Confirm</button> ' +
    '<button type="submit" name="action" value="cancel">I did not start this</button></form>');
}

export function refusedPage(message: string, userCode?: string): string {
  return page('Sign-in refused', `<p class="refused">${escapeHtml(message)}</p>` +
    (userCode ? `<p>Sign-in <code>${escapeHtml(userCode)}</code>. Your terminal shows the same reason.</p>` : '') +
    '<p>Run <code>gatehouse login</code> again to start over.</p>');
}

export function codeEntryPage(error?: string): string {
  return page('Sign in to Gatehouse', (error ? `<p class="refused">${escapeHtml(error)}</p>` : '') +
    '<p>Enter the code <code>gatehouse login</code> printed in your terminal.</p>' +
    '<form method="post" action="/login"><input name="code" autocomplete="off" autofocus placeholder="BCDF-GHJK" required> ' +
    '<button type="submit">Continue</button></form>');
}
