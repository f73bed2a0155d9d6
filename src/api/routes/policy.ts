// The policy: applied as a new version (checked completely first: a bad file changes nothing),
// shown, listed by version, and tried against a statement or command without running anything.
// All of it is administration.
import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';
import { requireAdmin } from '../auth.ts';
import { UserError } from '../../identity/identity-service.ts';
import { PolicyFileError } from '../../policy/policy-file.ts';
import { policySubject } from '../../policy/policy-service.ts';
import { protectedRefsRule } from '../../policy/policy.ts';
import { sqlFacts } from '../../policy/sql-facts.ts';
import { execFacts } from '../../policy/exec-facts.ts';
import { FILE_OPS, type PolicyAction, type RefUpdateFacts } from '../../policy/types.ts';
import { ValueMasking } from '../../policy/mask-detectors.ts';
import { randomBytes } from 'node:crypto';

interface TestBody {
  connection: string;
  identity: string;
  /** sql for postgres connections, exec for ssh, by default. */
  kind?: 'sql' | 'exec' | 'shell' | 'file' | 'git';
  text?: string;
  op?: string;
  path?: string;
  toPath?: string;
  updates?: RefUpdateFacts[];
  /** What the mask rules in scope do to this sample (instead of deciding on an action). */
  mask?: string;
  /** With mask: the sample is a value of this result column (schema.table.column, or an expression's output name). */
  column?: string;
}

const iso = (ms: number) => new Date(ms).toISOString();

export async function policyRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  app.addHook('preHandler', requireAdmin(deps.identity.access));

  app.get('/api/v1/policy', async () => {
    const v = await deps.store.getPolicyVersion();
    // Each connection's --protect globs are a rule of the policy too, ahead of the file's rules.
    const connectionRules = (await deps.store.listConnections()).filter((c) => c.options.protect?.length)
      .map((c) => ({ connection: c.name, rule: protectedRefsRule(c.options.protect!) }));
    if (!v) return { version: 0, rules: 0, source: null, inForce: deps.policy.version, connectionRules };
    return { version: v.version, hash: v.hash, appliedBy: v.appliedBy, appliedAt: iso(v.appliedAt), rules: (JSON.parse(v.document) as { rules: unknown[] }).rules.length, source: v.source, inForce: deps.policy.version, connectionRules };
  });

  app.get('/api/v1/policy/versions', async () =>
    (await deps.store.listPolicyVersions()).map((v) => ({ version: v.version, hash: v.hash, appliedBy: v.appliedBy, appliedAt: iso(v.appliedAt) })));

  app.put<{ Body: { source: string } }>('/api/v1/policy', {
    schema: { body: { type: 'object', required: ['source'], additionalProperties: false, properties: { source: { type: 'string', maxLength: 1024 * 1024 } } } },
  }, async (req, reply) => {
    try {
      const v = await deps.policy.apply(req.body.source, req.identity!.name);
      return reply.code(201).send({ version: v.version, hash: v.hash, rules: (JSON.parse(v.document) as { rules: unknown[] }).rules.length });
    } catch (err) {
      if (err instanceof PolicyFileError) return reply.code(422).send({ error: `the policy was not applied: ${err.message}`, line: err.line });
      throw err;
    }
  });

  app.post<{ Body: TestBody }>('/api/v1/policy/test', {
    schema: { body: { type: 'object', required: ['connection', 'identity'], additionalProperties: false, properties: {
      connection: { type: 'string', maxLength: 255 }, identity: { type: 'string', maxLength: 255 },
      kind: { type: 'string', enum: ['sql', 'exec', 'shell', 'file', 'git'] }, text: { type: 'string', maxLength: 1024 * 1024 },
      op: { type: 'string', enum: [...FILE_OPS] }, path: { type: 'string', maxLength: 4096 }, toPath: { type: 'string', maxLength: 4096 },
      updates: { type: 'array', maxItems: 100, items: { type: 'object', required: ['ref', 'kind'], additionalProperties: false, properties: {
        ref: { type: 'string', maxLength: 1024 }, kind: { type: 'string', enum: ['create', 'update', 'delete'] }, fastForward: { type: 'boolean' } } } },
      mask: { type: 'string', maxLength: 1024 * 1024 }, column: { type: 'string', maxLength: 1024 },
    } } },
  }, async (req) => {
    const b = req.body;
    const connection = await deps.store.getConnectionByName(b.connection);
    if (!connection) throw new UserError(`connection "${b.connection}" does not exist`, 404);
    const identity = await deps.store.getIdentityByName(b.identity);
    if (!identity) throw new UserError(`identity "${b.identity}" does not exist`, 404);
    if (b.mask !== undefined) {
      // What the engines would do to this text coming back: the same plan and masking, but hash with
      // a throwaway key (else this route would let anyone with it test guesses against masked values).
      const subject = await policySubject(deps.identity.access, identity);
      const plan = deps.policy.compiled?.maskingFor(subject, { connection: connection.name, type: connection.type }) ?? null;
      if (!plan) return { subject, policyVersion: deps.policy.version, mask: null };
      const masking = new ValueMasking(plan, randomBytes(32));
      let column: unknown;
      if (b.column !== undefined) {
        const parts = b.column.split('.');
        const choice = parts.length === 3 ? plan.column(parts[0]!, parts[1]!, parts[2]!) : plan.outputName(parts[parts.length - 1]!);
        column = { name: b.column, choice, masked: choice ? masking.column(b.mask, choice, parts[parts.length - 1]!) : b.mask };
      }
      const found = masking.secrets(b.mask);
      return {
        subject, policyVersion: plan.version,
        mask: { rules: plan.rules, columns: plan.masksColumns, detectors: plan.detectors, masked: found === undefined ? b.mask : found, changed: found !== undefined, ...(column ? { column } : {}) },
      };
    }
    const kind = b.kind ?? (connection.type === 'postgres' ? 'sql' : connection.type === 'ssh' ? 'exec' : 'git');
    let action: PolicyAction;
    let parsed: unknown;
    switch (kind) {
      case 'sql':
        if (b.text === undefined) throw new UserError('text: the SQL to decide on');
        action = { kind: 'sql', text: b.text };
        parsed = sqlFacts(b.text);
        break;
      case 'exec':
        if (b.text === undefined) throw new UserError('text: the command line to decide on');
        action = { kind: 'exec', command: b.text };
        parsed = execFacts(b.text);
        break;
      case 'shell':
        action = { kind: 'shell' };
        break;
      case 'file':
        if (!b.op || b.path === undefined) throw new UserError('op and path: the file operation to decide on');
        action = { kind: 'file', op: b.op as never, path: b.path, ...(b.toPath !== undefined ? { toPath: b.toPath } : {}) };
        break;
      case 'git':
        if (!b.updates?.length) throw new UserError('updates: the ref updates to decide on');
        action = { kind: 'git', updates: b.updates };
        break;
    }
    const subject = await policySubject(deps.identity.access, identity);
    const verdict = deps.policy.decide(subject, { connection: connection.name, type: connection.type, protect: connection.options.protect }, action);
    return { verdict, subject, action, ...(parsed !== undefined ? { parsed } : {}) };
  });
}
