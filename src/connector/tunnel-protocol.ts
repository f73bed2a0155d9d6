// The tunnel between a connector and the gateway: one mutually authenticated TLS connection that
// the connector dials out, carrying HTTP/2 with the roles reversed — the gateway is the HTTP/2
// client and opens one stream per target connection; the connector serves them. HTTP/2 gives
// each stream its own flow control, so a slow client never stalls the others.
export const TUNNEL_ALPN = 'gatehouse-tunnel/1';
export const HELLO_PATH = '/hello';
export const DIAL_PATH = '/dial';
export const TARGET_HEADER = 'x-gatehouse-target';
export const CONNECTOR_VERSION = '0.1.0';

export interface Hello { name: string; version: string; allow: string[] }

/** "host:port" → parts, or null when malformed. */
export function parseHostPort(text: string): { host: string; port: number } | null {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text.trim());
  if (!m) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  return { host: (m[1] ?? m[2]).toLowerCase(), port };
}
