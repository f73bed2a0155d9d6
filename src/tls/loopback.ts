// Which host names and addresses never leave the machine: plain HTTP is acceptable only there.
import net from 'node:net';

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost') return true; // not *.localhost: resolvers may send those elsewhere
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (net.isIPv6(h)) {
    // Canonical form first: 0:0:0:0:0:0:0:1 is ::1, ::ffff:127.0.0.1 is ::ffff:7f00:1.
    const canonical = new URL(`http://[${h}]/`).hostname;
    return canonical === '[::1]' || /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(canonical);
  }
  return false;
}
