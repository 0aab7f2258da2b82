/**
 * Connection set-up steps of libvirt's remote driver (remote_driver.c
 * doRemoteOpen / remoteAuthenticate), as small functions over the generated
 * procedure stubs:
 *
 *   await authenticate(remote);                         // AUTH_LIST (+ AUTH_POLKIT)
 *   await startKeepaliveIfSupported(rpc, remote);        // CONNECT_SUPPORTS_FEATURE(PROGRAM_KEEPALIVE)
 *   await openConnection(remote, 'qemu:///system', 0);   // CONNECT_OPEN
 */
import { LibvirtError } from '../errors.js';
import { AuthType, VirDrvFeature, VirErrorNumber } from './protocol.js';
import type { RemoteProcedures } from '../generated/remote.gen.js';
import type { KeepaliveOptions, RpcClient } from './client.js';

/** The parts of the generated RemoteProcedures each helper uses (tests may pass fakes). */
export type AuthProcedures = Pick<RemoteProcedures, 'authList' | 'authPolkit'>;
export type OpenProcedures = Pick<RemoteProcedures, 'connectOpen'>;
export type FeatureProcedures = Pick<RemoteProcedures, 'connectSupportsFeature'>;

export const SASL_UNSUPPORTED_MESSAGE =
  'the libvirt daemon requires SASL authentication, which vmctl does not support; ' +
  'set auth_unix_rw/auth_tcp to "none" or "polkit" in libvirtd.conf, or use qemu+ssh://';

/**
 * Authenticate the way libvirt's client does: ask the daemon which schemes it
 * accepts (REMOTE_PROC_AUTH_LIST). An empty list or "none" needs nothing;
 * "polkit" is completed with REMOTE_PROC_AUTH_POLKIT (the daemon asks polkit
 * about our uid); SASL alone is refused with a clear error (kind 'auth').
 */
export async function authenticate(remote: AuthProcedures): Promise<void> {
  let types: readonly AuthType[];
  try {
    ({ types } = await remote.authList());
  } catch (e) {
    // very old daemons lack AUTH_LIST: nothing to do (as libvirt does)
    if (e instanceof LibvirtError && e.kind === 'remote' && e.code === VirErrorNumber.VIR_ERR_NO_SUPPORT) return;
    throw e;
  }
  if (types.length === 0 || types.includes(AuthType.REMOTE_AUTH_NONE)) return;

  if (types.includes(AuthType.REMOTE_AUTH_POLKIT)) {
    try {
      await remote.authPolkit();
    } catch (e) {
      if (e instanceof LibvirtError && e.kind === 'remote') {
        throw new LibvirtError(`polkit authentication with the libvirt daemon failed: ${e.message}`, {
          kind: 'auth',
          code: e.code,
          domain: e.domain,
          level: e.level,
          cause: e,
        });
      }
      throw e;
    }
    return;
  }

  if (types.includes(AuthType.REMOTE_AUTH_SASL)) {
    throw new LibvirtError(SASL_UNSUPPORTED_MESSAGE, { kind: 'auth', code: VirErrorNumber.VIR_ERR_AUTH_UNAVAILABLE });
  }
  throw new LibvirtError(
    `the libvirt daemon offers only unsupported authentication types (${types.join(', ')})`,
    { kind: 'auth', code: VirErrorNumber.VIR_ERR_AUTH_UNAVAILABLE },
  );
}

/**
 * REMOTE_PROC_CONNECT_OPEN: bind the connection to a hypervisor driver.
 * `name` is the URI as the daemon should see it (LibvirtUri.remoteName, e.g.
 * 'qemu:///system'); flags are virConnectFlags (VIR_CONNECT_RO = 1).
 */
export async function openConnection(remote: OpenProcedures, name: string, flags = 0): Promise<void> {
  await remote.connectOpen({ name, flags });
}

/**
 * Ask whether the daemon speaks the keepalive protocol (which also makes the
 * daemon start pinging us) and, if so, start our own PINGs. Returns whether
 * keepalive is active. Do this after authenticate(), before or after
 * openConnection(), as libvirt does (before).
 */
export async function startKeepaliveIfSupported(
  rpc: RpcClient,
  remote: FeatureProcedures,
  opts?: KeepaliveOptions,
): Promise<boolean> {
  const { supported } = await remote.connectSupportsFeature({ feature: VirDrvFeature.VIR_DRV_FEATURE_PROGRAM_KEEPALIVE });
  if (!supported) return false;
  rpc.startKeepalive(opts);
  return true;
}
