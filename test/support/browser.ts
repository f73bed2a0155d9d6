// A very small browser for sign-in tests: plain HTTP requests with a cookie jar (per host and
// path, as browsers keep them), redirects followed one by one, and HTML forms read and submitted.
// Nothing is shortcut: every step is the request a browser would make.

export interface Page {
  url: string;
  status: number;
  body: string;
  headers: Headers;
  /** Every URL visited on the way here (redirects included), the first one first. */
  trail: string[];
}

interface Cookie { name: string; value: string; host: string; path: string }

export interface Form { action: string; method: string; fields: Record<string, string> }

export class Browser {
  private cookies: Cookie[] = [];

  /** GET `url` and follow redirects; `stopAt` returns the redirect target instead of visiting it. */
  async open(url: string, opts: { stopAt?: (url: URL) => boolean; maxRedirects?: number } = {}): Promise<Page> {
    return this.request('GET', url, undefined, opts);
  }

  /** Submits a form as application/x-www-form-urlencoded, relative to the page it is on. */
  async submit(page: Page, form: Form, override: Record<string, string> = {}, opts: { stopAt?: (url: URL) => boolean } = {}): Promise<Page> {
    const action = new URL(form.action || page.url, page.url).href;
    const body = new URLSearchParams({ ...form.fields, ...override }).toString();
    if (form.method.toUpperCase() === 'GET') return this.open(`${action.split('?')[0]}?${body}`, opts);
    return this.request('POST', action, body, opts);
  }

  async request(method: string, url: string, body: string | undefined, opts: { stopAt?: (url: URL) => boolean; maxRedirects?: number } = {}): Promise<Page> {
    const trail: string[] = [];
    let current = new URL(url);
    for (let hop = 0; ; hop++) {
      trail.push(current.href);
      const headers: Record<string, string> = { accept: 'text/html,application/json' };
      const cookie = this.cookieHeader(current);
      if (cookie) headers.cookie = cookie;
      if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
      const res = await fetch(current, { method, headers, body, redirect: 'manual' });
      for (const line of res.headers.getSetCookie()) this.store(current, line);
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        await res.arrayBuffer();
        const next = new URL(location, current);
        if (opts.stopAt?.(next) || hop >= (opts.maxRedirects ?? 20)) return { url: next.href, status: res.status, body: '', headers: res.headers, trail };
        current = next;
        // 303, and 301/302 after a POST, turn into a GET (as browsers do).
        if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === 'POST')) { method = 'GET'; body = undefined; }
        continue;
      }
      return { url: current.href, status: res.status, body: await res.text(), headers: res.headers, trail };
    }
  }

  /** The first form of the page (or the one whose action contains `actionPart`), with its fields' values. */
  form(page: Page, actionPart?: string): Form {
    const forms = [...page.body.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)];
    const found = forms.find((m) => actionPart === undefined || attr(m[1], 'action')?.includes(actionPart));
    if (!found) throw new Error(`no form${actionPart ? ` posting to ${actionPart}` : ''} on ${page.url}:\n${page.body.slice(0, 2000)}`);
    const fields: Record<string, string> = {};
    for (const input of found[2].matchAll(/<(?:input|textarea|button)\b([^>]*)>/gi)) {
      const name = attr(input[1], 'name');
      if (name && attr(input[1], 'type') !== 'submit') fields[name] = attr(input[1], 'value') ?? '';
    }
    return { action: decodeEntities(attr(found[1], 'action') ?? ''), method: attr(found[1], 'method') ?? 'GET', fields };
  }

  /** Cookies the jar holds for `url` (for assertions). */
  cookiesFor(url: string): Record<string, string> {
    const u = new URL(url);
    return Object.fromEntries(this.cookies.filter((c) => matches(c, u)).map((c) => [c.name, c.value]));
  }

  clearCookies(): void {
    this.cookies = [];
  }

  private cookieHeader(url: URL): string {
    return this.cookies.filter((c) => matches(c, url)).map((c) => `${c.name}=${c.value}`).join('; ');
  }

  private store(url: URL, line: string): void {
    const [pair, ...attrs] = line.split(';').map((s) => s.trim());
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    let path = url.pathname.replace(/\/[^/]*$/, '') || '/';
    let expired = value === '';
    for (const a of attrs) {
      const [k, v = ''] = a.split('=');
      if (/^path$/i.test(k)) path = v || '/';
      if (/^max-age$/i.test(k) && Number(v) <= 0) expired = true;
      if (/^expires$/i.test(k) && Date.parse(v) <= Date.now()) expired = true;
    }
    this.cookies = this.cookies.filter((c) => !(c.name === name && c.host === url.host && c.path === path));
    if (!expired) this.cookies.push({ name, value, host: url.host, path });
  }
}

function matches(c: Cookie, url: URL): boolean {
  return c.host === url.host && (url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`));
}

function attr(attrs: string, name: string): string | undefined {
  const m = new RegExp(`\\b${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i').exec(attrs);
  return m ? decodeEntities(m[1] ?? m[2] ?? m[3]) : undefined;
}

export function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos|#39);/gi, (_, e: string) => {
    if (e[0] === '#') return String.fromCodePoint(e[1].toLowerCase() === 'x' ? parseInt(e.slice(2), 16) : Number(e.slice(1)));
    return ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[e.toLowerCase()] ?? _;
  });
}

/** The visible text of an HTML page, whitespace collapsed (what a person reads). */
export function pageText(html: string): string {
  return decodeEntities(html.replace(/<(script|style|title)\b[\s\S]*?<\/\1>/gi, ' ').replace(/<\/?(code|strong|em|a)\b[^>]*>/gi, '').replace(/<[^>]+>/g, ' '))
    .replace(/\s+/g, ' ').trim();
}
