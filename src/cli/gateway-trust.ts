// The CLI's trust in the gateway it talks to (management commands and connectors alike): flags,
// then environment, then the fingerprint `gatehouse login` stored for that gateway.
import type { GatewayTrust } from '../tls/gateway-client.ts';
import { storedCredential } from './credentials.ts';

export interface GatewayTrustFlags { gatewayFingerprint?: string; gatewayCa?: string; insecureHttp?: boolean }

export function gatewayTrust(flags: GatewayTrustFlags, gateway: string, env: NodeJS.ProcessEnv = process.env): GatewayTrust {
  let stored: string | undefined;
  try { stored = storedCredential(gateway, env)?.gatewayFingerprint; } catch { /* a damaged file: login says so */ }
  return {
    fingerprint: flags.gatewayFingerprint ?? (env.GATEHOUSE_GATEWAY_FINGERPRINT || undefined) ?? stored,
    caFile: flags.gatewayCa ?? (env.GATEHOUSE_GATEWAY_CA || undefined),
    insecureHttp: flags.insecureHttp === true || /^(1|true|yes)$/i.test(env.GATEHOUSE_INSECURE_HTTP ?? ''),
  };
}
