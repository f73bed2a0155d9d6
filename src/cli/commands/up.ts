import type { Command } from 'commander';

export function registerUp(program: Command): void {
  program.command('up')
    .description('run the gateway on its embedded default (SQLite in the data directory, built-in connector)')
    .option('--config <file>', 'configuration file (default: ./gatehouse.yaml when present, or GATEHOUSE_CONFIG)')
    .option('--data-dir <dir>', 'data directory (default ./.gatehouse, or GATEHOUSE_DATA_DIR)')
    .option('--http <addr>', 'API listen address (default 127.0.0.1:8080, or GATEHOUSE_HTTP)')
    .option('--pg <addr>', 'PostgreSQL listen address (default 127.0.0.1:15432, or GATEHOUSE_PG)')
    .option('--ssh <addr>', 'SSH listener for shells, commands, file transfers and Git (default 127.0.0.1:2222, or GATEHOUSE_SSH)')
    .option('--connector-listen <addr>', 'where connectors\' tunnels arrive (default 127.0.0.1:8443, or GATEHOUSE_CONNECTOR_LISTEN)')
    .option('--tls-cert <file>', 'listener certificate (PEM); generated in the data directory when absent')
    .option('--tls-key <file>', 'listener private key (PEM)')
    .option('--http-tls <mode>', 'TLS on the API: auto (default: on unless it listens on loopback), on, off (or GATEHOUSE_HTTP_TLS)')
    .option('--http-allow-plaintext', 'with --http-tls off: serve plain HTTP on an address that is not loopback (behind a TLS-terminating proxy only)')
    .option('--log-level <level>', 'trace, debug, info, warn, error')
    .option('--store <url>', 'shared PostgreSQL store, postgres://… (default: SQLite in the data directory, or GATEHOUSE_STORE)')
    .action(async (opts: { config?: string; dataDir?: string; http?: string; pg?: string; ssh?: string; connectorListen?: string; tlsCert?: string; tlsKey?: string; httpTls?: string; httpAllowPlaintext?: boolean; logLevel?: string; store?: string }) => {
      // Loaded here, not at the top: management commands should not pay for the gateway's code.
      const { loadConfig } = await import('../../config/config.ts');
      const { createLogger } = await import('../../util/logger.ts');
      const { startGateway } = await import('../../gateway/gateway.ts');
      const config = loadConfig(opts);
      const log = createLogger({ level: config.logLevel });
      // Last resort: a bug in one session's handling must not end every other session. Log it
      // loudly; the failing session ends through its own error paths.
      process.on('uncaughtException', (err) => log.error({ err: err.message, stack: err.stack }, 'uncaught exception; the gateway keeps serving'));
      process.on('unhandledRejection', (err) => log.error({ err: (err as Error)?.message ?? String(err) }, 'unhandled rejection; the gateway keeps serving'));
      const gw = await startGateway(config, log);
      const url = `${gw.httpScheme}://${gw.http.host.includes(':') ? `[${gw.http.host}]` : gw.http.host}:${gw.http.port}`;
      process.stdout.write(`gatehouse is up\n  api:        ${url}\n` +
        (gw.apiFingerprint ? `  api cert:   ${gw.apiFingerprint} (clients and connectors: --gateway-fingerprint ${gw.apiFingerprint})\n` : '') +
        `  postgres:   ${gw.pg.host}:${gw.pg.port}\n  ssh:        ${gw.ssh.host}:${gw.ssh.port}\n  connectors: ${gw.connectors.host}:${gw.connectors.port}\n  data dir:   ${config.dataDir}\n` +
        (config.store ? `  store:      ${redactUrl(config.store)}\n` : ''));
      if (gw.newAdminToken) {
        process.stdout.write(`\nAn admin identity was created. Its token is shown this once; store it now:\n\n  export GATEHOUSE_URL=${url}\n${gw.apiFingerprint ? `  export GATEHOUSE_GATEWAY_FINGERPRINT=${gw.apiFingerprint}\n` : ''}  export GATEHOUSE_TOKEN=${gw.newAdminToken}\n\n`);
      }
      let stopping = false;
      const stop = (signal: string): void => {
        if (stopping) return;
        stopping = true;
        log.info({ signal }, 'shutting down');
        gw.close().then(() => { log.flush(); process.exit(0); }, (err: unknown) => {
          log.error({ err: (err as Error).message }, 'shutdown failed');
          process.exit(1);
        });
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
    });
}

/** The store URL without its password, for the start banner. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://…';
  }
}
