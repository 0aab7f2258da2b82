/**
 * SSH into guests (ssh2 client): open a connection whose host key is verified
 * against the pinned one (ssh-hostkey.ts) before anything else — there is no
 * trust on first use and no retry. Directly or through a tunnel (a guest on a
 * remote libvirt host). Failures say how far they got (ssh-errors.ts).
 */
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';
import type { AnyAuthMethod, ConnectConfig } from 'ssh2';
import { readKnownHostsFile, type KnownHostEntry } from '../../libvirt/transport/known-hosts.js';
import { hostPatternFor } from './cloudinit-keys.js';
import { VmctlError } from '../errors.js';
import { abortedError, sshError } from './ssh-errors.js';
import { checkPinnedHostKey, hostKeyAlgorithms, type PinCheck } from './ssh-hostkey.js';

const { Client } = ssh2;
type SshClient = InstanceType<typeof Client>;

export interface GuestTarget {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  /** unencrypted OpenSSH/PEM private key (text or bytes) */
  readonly privateKey?: string | Buffer;
  /** ssh-agent socket, tried before privateKey (for users who brought their own keys) */
  readonly agent?: string;
  /** known_hosts file holding the pinned key (the VM's stateDir/known_hosts) */
  readonly knownHostsFile: string;
  /** the name the key is pinned under; default '[host]:port' ('host' for port 22) */
  readonly hostPattern?: string;
  /** handshake + authentication deadline in ms (default 20000) */
  readonly timeoutMs?: number;
  /**
   * Reach host:port through a tunnel instead of connecting directly: for a
   * guest on a remote libvirt host whose forward listens on that host's
   * loopback (qemu+ssh: an ssh direct-tcpip channel of the libvirt connection).
   */
  readonly via?: GuestTunnel;
}

export interface GuestTunnel {
  /** for messages, e.g. 'ssh:root@kvm1' */
  readonly name: string;
  open(host: string, port: number): Promise<Duplex>;
}

export interface ConnectGuestOptions extends GuestTarget {
  readonly signal?: AbortSignal;
  /** ssh keepalive interval in ms for long sessions (default 15000; 0 disables) */
  readonly keepaliveMs?: number;
  /**
   * give up (stage no-banner, retryable) when no SSH banner came within this many ms. A
   * user-mode NIC's forward accepts at once even while the guest cannot answer yet; such a
   * connection only reaches sshd on QEMU's next SYN retransmit, seconds later, and would
   * then spend the rest of the timeout on the handshake: a fresh attempt is faster.
   */
  readonly bannerTimeoutMs?: number;
  /** called once when the server's SSH identification line arrived */
  readonly onBanner?: () => void;
}

export interface GuestConnection {
  readonly client: SshClient;
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly hostPattern: string;
  /** the verified (pinned) host key */
  readonly hostKey: { readonly type: string; readonly fingerprint: string };
  /** the server's identification, e.g. 'SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3' */
  readonly serverIdent: string | undefined;
  /** resolves when the connection is gone */
  readonly closed: Promise<void>;
  close(): void;
}

export const DEFAULT_TIMEOUT_MS = 20_000;

const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

/**
 * Open an SSH connection to a guest, verifying its host key against the key
 * pinned for hostPattern in knownHostsFile before anything else.
 */
export async function connectGuest(opts: ConnectGuestOptions): Promise<GuestConnection> {
  const pattern = (opts.hostPattern ?? hostPatternFor(opts.host, opts.port)).toLowerCase();
  const where = `${opts.user}@${opts.host}:${opts.port}${opts.via ? ` (through ${opts.via.name})` : ''}`;
  const signal = opts.signal;
  if (signal?.aborted) throw abortedError(`ssh to ${where}`, signal);
  if (opts.privateKey === undefined && opts.agent === undefined) {
    throw new VmctlError('INVALID_INPUT', `ssh to ${where}: no private key and no agent given`);
  }
  let entries: KnownHostEntry[];
  try {
    entries = readKnownHostsFile(opts.knownHostsFile);
  } catch (err) {
    throw sshError('HOST_KEY', 'host-key', `cannot read ${opts.knownHostsFile}: ${(err as Error).message}`, { cause: err });
  }

  const authHandler: AnyAuthMethod[] = [
    ...(opts.agent !== undefined ? [{ type: 'agent' as const, username: opts.user, agent: opts.agent }] : []),
    ...(opts.privateKey !== undefined ? [{ type: 'publickey' as const, username: opts.user, key: opts.privateKey }] : []),
  ];

  let bannerSeen = false;
  let serverIdent: string | undefined;
  let verified: PinCheck | undefined;
  let hostKeyError: VmctlError | undefined;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;

  let sock: Duplex | undefined;
  if (opts.via) {
    try {
      sock = await opts.via.open(opts.host, opts.port);
    } catch (err) {
      // the remote side could not connect: nothing listens there (yet), like ECONNREFUSED
      throw sshError('CONNECTION', 'port-closed', `ssh to ${where}: ${(err as Error).message}`, { cause: err });
    }
    if (signal?.aborted) {
      sock.destroy();
      throw abortedError(`ssh to ${where}`, signal);
    }
  }

  const client = new Client();
  const config: ConnectConfig = {
    ...(sock ? { sock } : {}),
    host: opts.host,
    port: opts.port,
    username: opts.user,
    authHandler,
    readyTimeout: timeoutMs,
    keepaliveInterval: opts.keepaliveMs ?? 15_000,
    keepaliveCountMax: 4,
    algorithms: { serverHostKey: hostKeyAlgorithms(entries, pattern) },
    hostVerifier: (key: Buffer): boolean => {
      if (!bannerSeen) {
        bannerSeen = true;
        opts.onBanner?.();
      }
      const check = checkPinnedHostKey(entries, pattern, key, opts.knownHostsFile);
      if (!check.ok) {
        hostKeyError = check.error;
        return false;
      }
      verified = check;
      return true;
    },
    // the only way ssh2 tells that the server's identification line arrived
    debug: (msg: string): void => {
      if (!bannerSeen && msg.startsWith('Remote ident: ')) {
        bannerSeen = true;
        opts.onBanner?.();
        const m = /^Remote ident: '(.*)'$/.exec(msg);
        serverIdent = m ? m[1] : msg.slice('Remote ident: '.length);
      }
    },
  };

  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => fail(stageError(new Error('timed out'), true)), timeoutMs + 1000);
    const bannerTimer =
      opts.bannerTimeoutMs !== undefined && opts.bannerTimeoutMs < timeoutMs
        ? setTimeout(() => {
            if (!bannerSeen) fail(sshError('TIMEOUT', 'no-banner', `ssh to ${where}: no SSH banner within ${opts.bannerTimeoutMs} ms`));
          }, opts.bannerTimeoutMs)
        : undefined;
    const onAbort = (): void => fail(abortedError(`ssh to ${where}`, signal!));
    signal?.addEventListener('abort', onAbort, { once: true });

    function cleanup(): void {
      settled = true;
      clearTimeout(timer);
      if (bannerTimer) clearTimeout(bannerTimer);
      signal?.removeEventListener('abort', onAbort);
      client.off('ready', onReady);
      client.off('error', onError);
      client.off('close', onClose);
    }
    function fail(err: VmctlError): void {
      if (settled) return;
      cleanup();
      client.on('error', () => {}); // late errors of the dying connection
      client.end();
      client.destroy();
      reject(err);
    }
    function stageError(err: Error & { code?: string; level?: string }, timedOut = false): VmctlError {
      if (hostKeyError) return hostKeyError;
      const code = err.code;
      if (!bannerSeen) {
        if (code === 'ECONNREFUSED') {
          return sshError('CONNECTION', 'port-closed', `ssh to ${where}: connection refused`, { cause: err });
        }
        if (timedOut || err.level === 'client-timeout' || code === 'ETIMEDOUT') {
          return sshError('TIMEOUT', 'no-banner', `ssh to ${where}: no SSH banner within ${timeoutMs} ms`, { cause: err });
        }
        if ((code !== undefined && RESET_CODES.has(code)) || /before handshake|closed|lost/i.test(err.message)) {
          return sshError('CONNECTION', 'port-closed', `ssh to ${where}: connection closed before an SSH banner (nothing listening)`, {
            cause: err,
          });
        }
        return sshError('CONNECTION', 'port-closed', `ssh to ${where}: ${err.message}`, { cause: err });
      }
      if (verified && err.level === 'client-authentication') {
        return sshError('AUTH', 'auth', `ssh to ${where}: authentication refused for user ${opts.user}`, {
          cause: err,
          hint: 'cloud-init may not have installed the key yet, or the key is not authorized for this user',
        });
      }
      if (timedOut || err.level === 'client-timeout') {
        return sshError('TIMEOUT', verified ? 'auth' : 'handshake', `ssh to ${where}: ${verified ? 'authentication' : 'key exchange'} did not finish within ${timeoutMs} ms`, {
          cause: err,
        });
      }
      return sshError('CONNECTION', verified ? 'auth' : 'handshake', `ssh to ${where}: ${err.message}`, { cause: err });
    }
    function onReady(): void {
      if (settled) return;
      cleanup();
      resolve();
    }
    function onError(err: Error): void {
      fail(stageError(err));
    }
    function onClose(): void {
      fail(stageError(new Error('connection closed')));
    }
    client.on('ready', onReady);
    client.on('error', onError);
    client.on('close', onClose);
    try {
      client.connect(config);
    } catch (err) {
      fail(sshError('INVALID_INPUT', 'auth', `ssh to ${where}: ${(err as Error).message}`, { cause: err }));
    }
  });

  // a connected client must never crash the process with an unhandled 'error'
  client.on('error', () => {});
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  return {
    client,
    host: opts.host,
    port: opts.port,
    user: opts.user,
    hostPattern: pattern,
    hostKey: { type: verified!.type, fingerprint: verified!.fingerprint },
    serverIdent,
    closed,
    close: () => {
      client.end();
    },
  };
}
