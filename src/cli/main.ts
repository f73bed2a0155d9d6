// The `gatehouse` command: runs the gateway (`up`) and manages it through its HTTP API.
import { Command } from 'commander';
import { ApiClient, ApiError } from './api-client.ts';
import { visible } from './format.ts';
import { registerUp } from './commands/up.ts';
import { registerManagement } from './commands/manage.ts';
import { registerAccess } from './commands/access.ts';
import { registerSessions } from './commands/sessions.ts';
import { registerEvidence } from './commands/evidence.ts';
import { registerConnectors } from './commands/connectors.ts';
import { registerLogin } from './commands/login.ts';
import { registerPolicy } from './commands/policy.ts';
import { registerAudit } from './commands/audit.ts';
import { registerApprovals } from './commands/approvals.ts';
import { signedInGateway, signedInToken } from './credentials.ts';
import { gatewayTrust, type GatewayTrustFlags } from './gateway-trust.ts';

const program = new Command('gatehouse')
  .description('Gatehouse: an access gateway that records, attributes and seals every command (PostgreSQL today)')
  .option('--gateway <url>', 'gateway API URL (or GATEHOUSE_URL)')
  .option('--token <token>', 'API token (or GATEHOUSE_TOKEN)')
  .option('--gateway-fingerprint <sha256>', 'accept only the gateway certificate with this fingerprint, SHA256:… (or GATEHOUSE_GATEWAY_FINGERPRINT)')
  .option('--gateway-ca <file>', 'verify the gateway\'s https certificate against this CA (PEM; or GATEHOUSE_GATEWAY_CA); default: the system\'s CAs')
  .option('--insecure-http', 'allow plain http to a gateway that is not on loopback (tokens cross in cleartext)')
  .showHelpAfterError();

function client(cmd: Command): ApiClient {
  const opts = cmd.optsWithGlobals<{ gateway?: string; token?: string } & GatewayTrustFlags>();
  // Then what `gatehouse login` stored: the gateway signed in to last, and its token.
  const gateway = opts.gateway ?? process.env.GATEHOUSE_URL ?? signedInGateway() ?? 'http://127.0.0.1:8080';
  return new ApiClient({ gateway, token: opts.token ?? process.env.GATEHOUSE_TOKEN ?? signedInToken(gateway), trust: gatewayTrust(opts, gateway) });
}

registerUp(program);
registerManagement(program, client);
registerAccess(program, client);
registerConnectors(program, client);
registerLogin(program, client);
registerPolicy(program, client);
registerAudit(program, client);
registerApprovals(program, client);
registerEvidence(program, client, registerSessions(program, client));

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const message = err instanceof ApiError || err instanceof Error ? err.message : String(err);
  // Messages can echo what a client or a bundle chose (names, paths): escaped like any output.
  console.error(`gatehouse: ${visible(message)}`);
  process.exitCode = err instanceof ApiError && err.status === 0 ? 2 : 1;
}
