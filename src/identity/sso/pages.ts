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

export function signedInPage(identity: string, provider: string, userCode: string): string {
  return page('Signed in to Gatehouse', `<p>Signed in as <strong>${escapeHtml(identity)}</strong> through ${escapeHtml(provider)}.</p>` +
    `<p>Return to your terminal: it shows the code <code>${escapeHtml(userCode)}</code>. If no terminal of yours shows this code, ` +
    'someone else started this sign-in: tell your administrator.</p><p>You may close this page.</p>');
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
