export interface ListenAddress { host: string; port: number }

/** Parses "HOST:PORT", "[v6]:PORT" or ":PORT". */
export function parseListenAddress(text: string, defaultHost = '127.0.0.1'): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text.trim());
  if (!m) throw new Error(`invalid address "${text}" (expected HOST:PORT)`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`invalid port in "${text}"`);
  return { host: m[1] ?? (m[2] || defaultHost), port };
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}
