// `gatehouse connector …`: enroll and manage connectors, and run one.
import type { Command } from 'commander';
import type { ApiClient } from '../api-client.ts';
import { table } from '../format.ts';
import { gatewayTrust, type GatewayTrustFlags } from '../gateway-trust.ts';

type ClientFactory = (cmd: Command) => ApiClient;

interface ConnectorOut { name: string; status: string; version: string | null; address: string | null; lastSeen: string | null; openStreams: number; tunnels: number; allow: string[] }

export function registerConnectors(program: Command, client: ClientFactory): void {
  const connector = program.command('connector')
    .description('run a connector (with --gateway/--token/--name/--data-dir/--allow), or manage connectors (add, list, rm)')
    .option('--name <name>', 'this connector\'s name (as given to `gatehouse connector add`)')
    .option('--data-dir <dir>', 'where the connector keeps its credential', './.gatehouse-connector')
    .option('--allow <targets>', 'HOST:PORT[,HOST:PORT…] this connector may open; anything else is refused')
    .option('--token <token>', 'single-use enrollment token (needed only the first time)')
    .action(async (opts: { name?: string; dataDir: string; allow?: string; token?: string }, cmd: Command) => {
      const global = cmd.optsWithGlobals<{ gateway?: string; token?: string } & GatewayTrustFlags>();
      const gateway = global.gateway ?? process.env.GATEHOUSE_URL;
      if (!opts.name || !gateway) throw new Error('to run a connector: gatehouse connector --gateway URL --token TOKEN --name NAME --data-dir DIR --allow HOST:PORT[,…]');
      const { ConnectorAgent } = await import('../../connector/agent.ts');
      const { createLogger } = await import('../../util/logger.ts');
      const log = createLogger();
      const agent = new ConnectorAgent({
        gateway, name: opts.name, dataDir: opts.dataDir, allow: (opts.allow ?? '').split(',').map((s) => s.trim()).filter(Boolean),
        token: opts.token ?? global.token, trust: gatewayTrust(global, gateway), log,
      });
      let announced = false;
      agent.onConnected = () => {
        if (!announced) process.stdout.write(`connector ${opts.name} is connected\n`);
        announced = true;
      };
      await agent.start();
      const stop = (): void => { void agent.stop().then(() => { log.flush(); process.exit(0); }); };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
  // The parent's --token is the enrollment token; the management commands below use the API token.
  connector.command('add <name>').description('register a connector; prints its single-use enrollment token (15 minutes) as the last line')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      const api = client(cmd);
      const out = await api.post<{ enrollmentToken: string; expiresAt: string; gatewayFingerprint?: string }>('/api/v1/connectors', { name });
      // The fingerprint comes from a gateway this command already trusted (pinned, CA-verified, or loopback).
      const pin = out.gatewayFingerprint ? ` --gateway-fingerprint ${out.gatewayFingerprint}` : '';
      console.error(`connector ${name} registered; enroll it before ${out.expiresAt} with:\n  gatehouse connector --gateway ${api.gateway}${pin} --name ${name} --data-dir DIR --allow HOST:PORT --token TOKEN` +
        (pin ? '' : '\n(the API serves plain http: on another machine use its https:// URL and --gateway-fingerprint)'));
      console.log(out.enrollmentToken);
    });
  connector.command('list').description('connectors with their status, version, address, last contact and open streams')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const rows = await client(cmd).get<ConnectorOut[]>('/api/v1/connectors');
      console.log(opts.json ? JSON.stringify(rows, null, 2) : table(['NAME', 'STATUS', 'VERSION', 'ADDRESS', 'LAST SEEN', 'STREAMS', 'ALLOW'],
        rows.map((c) => [c.name, c.status, c.version, c.address, c.lastSeen, c.openStreams, c.allow.join(',')])));
    });
  connector.command('rm <name>').description('revoke a connector and cut its tunnel at once')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      await client(cmd).delete(`/api/v1/connectors/${encodeURIComponent(name)}`);
      console.log(`connector ${name} revoked`);
    });
}
