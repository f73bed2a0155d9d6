import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { requireAdmin } from '../auth.ts';
import { UserError } from '../../identity/identity-service.ts';
import { CONNECTION_TYPES, type Connection, type ConnectionOptions, type ConnectionType } from '../../store/types.ts';
import { newId } from '../../util/ids.ts';
import { checkPrivateKey } from '../../engines/ssh/keys.ts';
import type { Dialer } from '../../connector/dialer.ts';
import { probeHostKeys } from '../../engines/ssh/host-key-probe.ts';
import { describePin, parseHostKeyPins, pinText, type HostKeyPin } from '../../engines/ssh/host-key-pins.ts';

/** What the API shows of a connection: never the credential, only whether one is stored. */
export function connectionView(c: Connection) {
  return {
    id: c.id, name: c.name, type: c.type, host: c.host, port: c.port, database: c.database, user: c.username,
    hasPassword: c.sealedSecret !== null, options: c.options, createdAt: new Date(c.createdAt).toISOString(),
  };
}

interface ConnectionBody {
  name: string; type: ConnectionType; host: string; port: number; database?: string; user?: string;
  /** postgres, ssh (with sshAuth password) or git-http (basic auth) password. */
  password?: string;
  /** ssh: the private key the gateway logs in with (OpenSSH or PEM text). */
  privateKey?: string;
  /**
   * ssh: the pinned host keys, known_hosts style: one or more lines, each a public key
   * ("ssh-rsa AAAA…", optionally after a host field) or a SHA256 fingerprint of one of the
   * target's keys, which is resolved to the key by fetching the target's keys now.
   */
  hostKey?: string;
  allowForwarding?: Array<'local' | 'remote' | 'agent'>;
  allowEnv?: string[];
  protect?: string[];
  /** ssh: only Git service requests may run (default: on when protect is given). */
  gitOnly?: boolean;
  tls?: boolean;
  basePath?: string;
  sslmode?: 'disable' | 'require' | 'verify-ca' | 'verify-full';
  /** postgres: PEM CA certificate(s) for verify-ca / verify-full. */
  sslRootCert?: string;
  /** postgres: authentication methods the target may ask for. */
  requireAuth?: Array<'scram-sha-256' | 'md5' | 'password' | 'none'>;
  recording?: 'durable' | 'best-effort';
  retentionSeconds?: number;
  /** Sessions end this long after they start (seconds). */
  maxSessionSeconds?: number;
  via?: string[];
}

const NAME = '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$';
const GLOB = { type: 'string', minLength: 1, maxLength: 255, pattern: '^[^\\s]+$' };

export async function connectionRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.addHook('preHandler', requireAdmin(deps.identity.access));

  app.get('/api/v1/connections', async () => (await deps.store.listConnections()).map(connectionView));

  app.post<{ Body: ConnectionBody }>('/api/v1/connections', {
    schema: { body: { type: 'object', required: ['name', 'type', 'host', 'port'], additionalProperties: false, properties: {
      name: { type: 'string', pattern: NAME },
      type: { type: 'string', enum: [...CONNECTION_TYPES] },
      host: { type: 'string', minLength: 1, maxLength: 255 },
      port: { type: 'integer', minimum: 1, maximum: 65535 },
      database: { type: 'string', minLength: 1, maxLength: 63 },
      user: { type: 'string', minLength: 1, maxLength: 63 },
      password: { type: 'string', maxLength: 1024 },
      privateKey: { type: 'string', maxLength: 16384 },
      hostKey: { type: 'string', maxLength: 32768 },
      allowForwarding: { type: 'array', maxItems: 3, uniqueItems: true, items: { type: 'string', enum: ['local', 'remote', 'agent'] } },
      allowEnv: { type: 'array', maxItems: 64, items: GLOB },
      protect: { type: 'array', maxItems: 64, items: GLOB },
      gitOnly: { type: 'boolean' },
      tls: { type: 'boolean' },
      basePath: { type: 'string', maxLength: 255, pattern: '^(/[^\\s?#]*)?$' },
      sslmode: { type: 'string', enum: ['disable', 'require', 'verify-ca', 'verify-full'] },
      sslRootCert: { type: 'string', minLength: 1, maxLength: 65536 },
      requireAuth: { type: 'array', minItems: 1, maxItems: 4, uniqueItems: true, items: { type: 'string', enum: ['scram-sha-256', 'md5', 'password', 'none'] } },
      recording: { type: 'string', enum: ['durable', 'best-effort'] },
      retentionSeconds: { type: 'integer', minimum: 1 },
      maxSessionSeconds: { type: 'integer', minimum: 1 },
      via: { type: 'array', maxItems: 16, items: { type: 'string', pattern: NAME } },
    } } },
  }, async (req, reply) => {
    const b = req.body;
    for (const name of b.via ?? []) {
      const c = await deps.store.getConnectorByName(name);
      if (!c || c.revokedAt !== null) throw new UserError(`connector "${name}" does not exist (add it with \`gatehouse connector add ${name}\`)`, 404);
    }
    if (await deps.store.getConnectionByName(b.name)) throw new UserError(`connection "${b.name}" already exists`, 409);
    const id = newId('conn');
    const { secret, options, database, user } = typeSpecific(b);
    if (b.type === 'ssh') options.hostKey = await resolveHostKeyPins(deps.dialer, b);
    const connection: Connection = {
      id, name: b.name, type: b.type, host: b.host, port: b.port, database, username: user,
      sealedSecret: secret ? deps.secrets.seal(secret, id) : null,
      options: { ...options, ...(b.recording ? { recording: b.recording } : {}),
        ...(b.retentionSeconds ? { retentionSeconds: b.retentionSeconds } : {}),
        ...(b.maxSessionSeconds ? { maxSessionSeconds: b.maxSessionSeconds } : {}),
        ...(b.via && b.via.length > 0 ? { via: b.via } : {}) }, createdAt: Date.now(),
    };
    await deps.store.createConnection(connection);
    return reply.code(201).send(connectionView(connection));
  });

  // Fetches an SSH target's host key through the same path sessions take, for the operator to confirm.
  app.post<{ Body: { host: string; port: number; via?: string[] } }>('/api/v1/ssh/host-key', {
    schema: { body: { type: 'object', required: ['host', 'port'], additionalProperties: false, properties: {
      host: { type: 'string', minLength: 1, maxLength: 255 }, port: { type: 'integer', minimum: 1, maximum: 65535 },
      via: { type: 'array', maxItems: 16, items: { type: 'string', pattern: NAME } },
    } } },
  }, async (req) => {
    try {
      const keys = await probeHostKeys(deps.dialer, { host: req.body.host, port: req.body.port, via: req.body.via });
      return { hostKeys: keys.map((k) => ({ type: k.type, hostKey: k.line, fingerprint: k.fingerprint })) };
    } catch (err) {
      throw new UserError((err as Error).message, 502);
    }
  });

  app.delete<{ Params: { name: string } }>('/api/v1/connections/:name', async (req) => {
    const c = await deps.store.getConnectionByName(req.params.name);
    if (!c) throw new UserError(`connection "${req.params.name}" does not exist`, 404);
    await deps.store.deleteConnection(c.id);
    for (const e of deps.engines) e.connectionChanged?.(c.id);
    return { deleted: c.name, endedSessions: (await deps.sessions.accessChanged('connection removed')).length };
  });
}

/** Checks the fields each connection type needs and turns them into its stored form. */
function typeSpecific(b: ConnectionBody): { secret: string | null; options: ConnectionOptions; database: string; user: string } {
  const forbid = (fields: Array<keyof ConnectionBody>) => {
    for (const f of fields) if (b[f] !== undefined) throw new UserError(`${f} does not apply to ${b.type} connections`);
  };
  switch (b.type) {
    case 'postgres': {
      forbid(['privateKey', 'hostKey', 'allowForwarding', 'allowEnv', 'protect', 'gitOnly', 'tls', 'basePath']);
      if (!b.database || !b.user) throw new UserError('postgres connections need database and user');
      if ((b.sslmode === 'verify-ca' || b.sslmode === 'verify-full') && !b.sslRootCert) throw new UserError(`sslmode ${b.sslmode} needs the target's CA certificate (sslRootCert)`);
      if (b.sslRootCert && !/-----BEGIN CERTIFICATE-----/.test(b.sslRootCert)) throw new UserError('sslRootCert must be PEM certificate text');
      const options: ConnectionOptions = {};
      if (b.sslmode) options.sslmode = b.sslmode;
      if (b.sslRootCert) options.sslRootCert = b.sslRootCert;
      if (b.requireAuth) options.requireAuth = b.requireAuth;
      return { secret: b.password ?? null, options, database: b.database, user: b.user };
    }
    case 'ssh': {
      forbid(['sslmode', 'sslRootCert', 'requireAuth', 'database', 'tls', 'basePath']);
      if (!b.user) throw new UserError('ssh connections need user');
      if (!b.hostKey) throw new UserError('ssh connections need the target\'s host key pinned (hostKey)');
      if ((b.privateKey === undefined) === (b.password === undefined)) throw new UserError('ssh connections need exactly one of privateKey or password');
      // Ref protection only holds where nothing but Git runs: protecting refs makes the connection Git-only unless asked otherwise.
      const gitOnly = b.gitOnly ?? (b.protect?.length ?? 0) > 0;
      if (gitOnly && b.allowForwarding?.length) throw new UserError('allowForwarding does not apply to a Git-only connection (gitOnly, on by default with protect): pass gitOnly false to allow it');
      if (b.privateKey !== undefined) {
        try {
          checkPrivateKey(b.privateKey);
        } catch (err) {
          throw new UserError(`privateKey: ${(err as Error).message}`);
        }
      }
      return {
        secret: b.privateKey ?? b.password!, database: '', user: b.user,
        options: { sshAuth: b.privateKey !== undefined ? 'key' : 'password',
          ...(b.allowForwarding?.length ? { allowForwarding: b.allowForwarding } : {}),
          ...(b.allowEnv ? { allowEnv: b.allowEnv } : {}), ...(b.protect?.length ? { protect: b.protect } : {}), ...(gitOnly ? { gitOnly } : {}) },
      };
    }
    case 'git-http': {
      forbid(['sslmode', 'sslRootCert', 'requireAuth', 'database', 'privateKey', 'hostKey', 'allowForwarding', 'allowEnv', 'gitOnly']);
      if (b.password !== undefined && !b.user) throw new UserError('a git-http password needs a user');
      return {
        secret: b.password ?? null, database: '', user: b.user ?? '',
        options: { tls: b.tls ?? false, basePath: (b.basePath ?? '').replace(/\/+$/, ''), ...(b.protect?.length ? { protect: b.protect } : {}) },
      };
    }
  }
}

/**
 * The stored form of an ssh connection's pins: full keys, one per line. Fingerprints are resolved
 * against the keys the target presents now (through the path sessions take); one that matches none
 * of them is refused, naming what the target offers, so nothing is pinned that no session could use.
 */
async function resolveHostKeyPins(dialer: Dialer, b: ConnectionBody): Promise<string> {
  let pins: HostKeyPin[];
  try {
    pins = parseHostKeyPins(b.hostKey ?? '');
  } catch (err) {
    throw new UserError(`hostKey: ${(err as Error).message}`);
  }
  if (pins.some((p) => p.kind === 'fingerprint')) {
    let offered;
    try {
      offered = await probeHostKeys(dialer, { host: b.host, port: b.port, via: b.via });
    } catch (err) {
      throw new UserError(`hostKey: cannot resolve a fingerprint to the target's key: ${(err as Error).message}`, 502);
    }
    pins = pins.map((p) => {
      if (p.kind === 'key') return p;
      const key = offered.find((k) => k.fingerprint === p.fingerprint);
      if (!key) throw new UserError(`hostKey: the target has no host key ${p.fingerprint}; it offers ${offered.map((k) => describePin(k)).join(', ')}`, 422);
      return { kind: 'key', key };
    });
  }
  return [...new Set(pins.map(pinText))].join('\n');
}
