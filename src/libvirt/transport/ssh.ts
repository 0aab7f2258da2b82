/**
 * SSH transport (qemu+ssh://[user@]host[:port]/system, also +libssh2/+libssh).
 *
 * Uses the ssh2 library in-process: the libvirt socket on the remote host is
 * reached through an OpenSSH "direct-streamlocal" channel (what `ssh -L
 * local:/remote/sock` uses), so nothing but sshd is needed on the remote
 * side. For /session URIs without ?socket= (whose socket path we cannot
 * guess) and for ?proxy=native, the channel instead runs libvirt's own
 * `virt-ssh-helper URI` on the remote host, as libvirt does.
 *
 * Remote socket (system): ?socket=PATH (only that), else
 * /run/libvirt/libvirt-sock, falling back to the modular
 * /run/libvirt/virt<driver>d-sock, then the same under /var/run (hosts
 * without /run); ?mode=legacy|direct narrows that. If none can be opened
 * (daemon down, or sshd forbids forwarding: AllowStreamLocalForwarding no or
 * AllowTcpForwarding no), ?proxy=auto (the default) falls back to
 * virt-ssh-helper; ?proxy=netcat does not.
 *
 * Authentication: ssh-agent (SSH_AUTH_SOCK) and private keys: ?keyfile=FILE,
 * else ~/.ssh/id_ed25519, ~/.ssh/id_ecdsa, ~/.ssh/id_rsa. vmctl cannot prompt
 * for passphrases: encrypted keys need the agent. ?sshauth=agent,privkey
 * restricts/orders the methods (password methods are not supported).
 *
 * Host keys are ALWAYS verified against ~/.ssh/known_hosts (or
 * ?known_hosts=FILE). A key that differs from a recorded one, or is
 * @revoked, is refused no matter what. An unknown key is refused unless
 * opts.acceptUnknownHostKey, ?no_verify=1 or ?known_hosts_verify=auto, in
 * which case it is accepted and recorded (hashed) in the known_hosts file;
 * ?known_hosts_verify=ignore accepts an unknown key without recording it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import type { AnyAuthMethod, ClientChannel, ConnectConfig, ParsedKey, ServerHostKeyAlgorithm } from 'ssh2';
import { fail, timeoutOf } from './common.js';
import { TransportError, abortError, errMessage, errnoCode } from './errors.js';
import {
  appendKnownHostsLine,
  checkHostKey,
  formatKnownHostsLine,
  preferredHostKeyAlgorithms,
  readKnownHostsFile,
  type HostKeyCheck,
  type KnownHostEntry,
} from './known-hosts.js';
import { describeTcpError } from './tcp.js';
import type { ConnectedTransport, LibvirtUri, TransportOptions } from './types.js';
import { formatHostPort, uriFlag, uriHost, uriParam } from '../uri.js';

const { Client, utils } = ssh2;

export const SSH_DEFAULT_PORT = 22;

/** Host key algorithms ssh2 supports, in its default order (ssh-dss left out). */
export const SUPPORTED_HOST_KEY_ALGORITHMS: readonly ServerHostKeyAlgorithm[] = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
];

export const DEFAULT_KEY_NAMES = ['id_ed25519', 'id_ecdsa', 'id_rsa'] as const;

/** strict: unknown keys refused; accept-new: unknown keys accepted and recorded; accept-unrecorded: accepted, not recorded */
export type HostKeyPolicy = 'strict' | 'accept-new' | 'accept-unrecorded';

export interface SshEnv {
  readonly env: NodeJS.ProcessEnv;
  readonly home: string;
  readonly username: string;
}

export function realSshEnv(): SshEnv {
  let username = process.env['USER'] ?? 'root';
  try {
    username = userInfo().username;
  } catch {
    /* keep $USER */
  }
  return { env: process.env, home: homedir(), username };
}

/** Show paths under $HOME as ~/... in messages. */
export function tildify(path: string, home: string): string {
  return home !== '' && home !== '/' && path.startsWith(home + '/') ? '~' + path.slice(home.length) : path;
}

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export interface SshKey {
  readonly path: string;
  readonly key: ParsedKey;
}

export interface SshPlan {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly knownHostsFile: string;
  readonly policy: HostKeyPolicy;
  readonly agent?: string;
  readonly keys: readonly SshKey[];
  /** remote sockets to try in order (streamlocal mode) */
  readonly remoteSockets: readonly string[];
  /** run this command (virt-ssh-helper) when no remote socket could be opened (or there are none to try) */
  readonly helperCommand?: string;
  readonly home: string;
}

type KeyLoad = { ok: true; key: ParsedKey } | { ok: false; encrypted: boolean; reason: string };

function loadPrivateKey(path: string): KeyLoad {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err) {
    const code = errnoCode(err);
    return { ok: false, encrypted: false, reason: code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : errMessage(err) };
  }
  const parsed = utils.parseKey(data);
  if (parsed instanceof Error) {
    const encrypted = /encrypted|passphrase/i.test(parsed.message);
    return { ok: false, encrypted, reason: encrypted ? 'it is encrypted (passphrase-protected)' : parsed.message };
  }
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (key === undefined || !key.isPrivateKey()) return { ok: false, encrypted: false, reason: 'not a private key' };
  return { ok: true, key };
}

/** Work out everything needed to connect; throws TransportError for unusable configurations. */
export function planSsh(uri: LibvirtUri, opts: TransportOptions = {}, e: SshEnv = realSshEnv()): SshPlan {
  const host = uriHost(uri);
  const port = uri.port ?? SSH_DEFAULT_PORT;
  const username = uri.user ?? e.username;
  const knownHostsFile = uriParam(uri, 'known_hosts') || join(e.home, '.ssh', 'known_hosts');

  const khv = uriParam(uri, 'known_hosts_verify') ?? 'normal';
  let policy: HostKeyPolicy = 'strict';
  if (opts.acceptUnknownHostKey || uriFlag(uri, 'no_verify') || khv === 'auto') policy = 'accept-new';
  else if (khv === 'ignore') policy = 'accept-unrecorded';

  // authentication methods
  const sshauth = (uriParam(uri, 'sshauth') ?? 'agent,privkey')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
  const wantAgent = sshauth.includes('agent');
  const wantKeys = sshauth.includes('privkey');
  if (!wantAgent && !wantKeys) {
    throw fail('INVALID_URI', `sshauth=${uriParam(uri, 'sshauth')} leaves no supported SSH authentication method`, "vmctl supports only 'agent' and 'privkey'");
  }
  const sock = e.env['SSH_AUTH_SOCK'];
  const agent = wantAgent && sock !== undefined && sock !== '' && existsSync(sock) ? sock : undefined;

  const keys: SshKey[] = [];
  const where = `${username}@${formatHostPort(host, port === SSH_DEFAULT_PORT ? undefined : port)}`;
  if (wantKeys) {
    const keyfile = uriParam(uri, 'keyfile');
    if (keyfile !== undefined && keyfile !== '') {
      const r = loadPrivateKey(keyfile);
      if (r.ok) keys.push({ path: keyfile, key: r.key });
      else if (r.encrypted && agent === undefined) {
        throw fail(
          'SSH_AUTH',
          `SSH key ${keyfile} is encrypted and no ssh-agent is available (vmctl cannot ask for passphrases)`,
          `load it into an agent: eval "$(ssh-agent)" && ssh-add ${keyfile}`,
        );
      } else if (!r.encrypted) {
        throw fail('SSH_AUTH', `cannot use SSH key ${keyfile} (?keyfile=): ${r.reason}`, 'check the keyfile= path in --connect');
      }
      // encrypted but an agent is there: rely on the agent holding it
    } else {
      const encrypted: string[] = [];
      for (const name of DEFAULT_KEY_NAMES) {
        const p = join(e.home, '.ssh', name);
        if (!existsSync(p)) continue;
        const r = loadPrivateKey(p);
        if (r.ok) keys.push({ path: p, key: r.key });
        else if (r.encrypted) encrypted.push(p);
      }
      if (keys.length === 0 && agent === undefined) {
        if (encrypted.length > 0) {
          const first = tildify(encrypted[0]!, e.home);
          throw fail(
            'SSH_AUTH',
            `no usable SSH credentials for ${where}: ${encrypted.map((p) => tildify(p, e.home)).join(', ')} ${encrypted.length > 1 ? 'are' : 'is'} encrypted and no ssh-agent is available (vmctl cannot ask for passphrases)`,
            `load the key into an agent (eval "$(ssh-agent)" && ssh-add ${first}), or pass an unencrypted key with ?keyfile=`,
          );
        }
      }
    }
  }
  if (keys.length === 0 && agent === undefined) {
    const tried = wantKeys ? DEFAULT_KEY_NAMES.map((n) => `~/.ssh/${n}`).join(', ') : 'no keys (sshauth)';
    throw fail(
      'SSH_AUTH',
      `no SSH credentials for ${where}: no ssh-agent (SSH_AUTH_SOCK ${sock ? 'does not exist' : 'is unset'}) and no private key (${tried})`,
      `create a key (ssh-keygen -t ed25519), install it on the host (ssh-copy-id${port !== SSH_DEFAULT_PORT ? ` -p ${port}` : ''} ${username}@${host}), or pass ?keyfile=FILE`,
    );
  }

  // what to open on the far side
  const readOnly = opts.readOnly ?? false;
  const socket = uriParam(uri, 'socket');
  const proxy = uriParam(uri, 'proxy') ?? 'auto';
  const mode = uriParam(uri, 'mode') ?? 'auto';
  const base = { host, port, username, knownHostsFile, policy, keys, home: e.home, ...(agent ? { agent } : {}) };
  if (socket !== undefined && socket !== '') {
    return { ...base, remoteSockets: [socket] };
  }
  if (proxy === 'native' || uri.path === '/session' || /^test\+/i.test(uri.original)) {
    return { ...base, remoteSockets: [], helperCommand: `virt-ssh-helper${readOnly ? ' -r' : ''} ${shq(uri.remoteName)}` };
  }
  const suffix = readOnly ? 'sock-ro' : 'sock';
  const names: string[] = [];
  if (mode !== 'direct') names.push(`libvirt-${suffix}`);
  if (mode !== 'legacy') names.push(`virt${uri.driver}d-${suffix}`);
  const remoteSockets = [...names.map((n) => `/run/libvirt/${n}`), ...names.map((n) => `/var/run/libvirt/${n}`)];
  if (proxy === 'netcat') return { ...base, remoteSockets };
  // proxy=auto: fall back to virt-ssh-helper (e.g. sshd forbids socket forwarding)
  return { ...base, remoteSockets, helperCommand: `virt-ssh-helper${readOnly ? ' -r' : ''} ${shq(uri.remoteName)}` };
}

export type HostKeyDecision = { accept: true; record: boolean } | { accept: false; error: TransportError };

/** Turn a known_hosts check into accept/refuse, with the user-facing error. */
export function decideHostKey(check: HostKeyCheck, policy: HostKeyPolicy, knownHostsFile: string, host: string, port: number, home = ''): HostKeyDecision {
  const file = tildify(knownHostsFile, home);
  const presented = `${check.keyType} ${check.fingerprint}`;
  const at = (e: KnownHostEntry): string => `${file}:${e.line}`;
  const removeCmd = `ssh-keygen -R ${shq(check.name)} -f ${knownHostsFile}`;
  switch (check.status) {
    case 'known':
      return { accept: true, record: false };
    case 'revoked':
      return {
        accept: false,
        error: fail(
          'SSH_HOSTKEY_MISMATCH',
          `REFUSING ssh connection: the host key of ${check.name} (${presented}) is marked @revoked in ${check.entries.map(at).join(', ')}`,
          'the host presents a revoked key; contact its administrator',
        ),
      };
    case 'mismatch':
      return {
        accept: false,
        error: fail(
          'SSH_HOSTKEY_MISMATCH',
          `WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED for ${check.name}, REFUSING to connect: it presented ${presented}, but ${check.entries.map(at).join(', ')} records a different key; someone could be eavesdropping on you (man-in-the-middle attack), or the host key was just changed`,
          `if the change is expected, verify the new key, remove the old one (${removeCmd}) and connect again; vmctl never overrides a changed host key`,
        ),
      };
    case 'other-type': {
      const types = [...new Set(check.entries.map((e) => e.keyType))].join(', ');
      return {
        accept: false,
        error: fail(
          'SSH_HOSTKEY_MISMATCH',
          `REFUSING ssh connection to ${check.name}: it presented ${presented}, but ${file} records only ${types} key(s) for it (${check.entries.map(at).join(', ')}); possible man-in-the-middle attack`,
          `if the host's keys really changed, verify the new key, remove the old entries (${removeCmd}) and connect again`,
        ),
      };
    }
    case 'unknown': {
      if (policy === 'accept-new') return { accept: true, record: true };
      if (policy === 'accept-unrecorded') return { accept: true, record: false };
      const scan = `ssh-keyscan${port !== SSH_DEFAULT_PORT ? ` -p ${port}` : ''} ${host} >> ${file}`;
      return {
        accept: false,
        error: fail(
          'SSH_HOSTKEY_UNKNOWN',
          `host key for ${check.name} is unknown (${presented})`,
          `verify it and add it to ${file}, e.g. \`${scan}\`, or accept it once with --accept-host-key`,
        ),
      };
    }
  }
}

function authFailed(plan: SshPlan, err: Error): TransportError {
  const tried = [...(plan.agent ? ['ssh-agent'] : []), ...plan.keys.map((k) => tildify(k.path, plan.home))].join(', ');
  const where = `${plan.username}@${formatHostPort(plan.host, plan.port)}`;
  return fail(
    'SSH_AUTH',
    `ssh authentication as ${where} failed (tried: ${tried})`,
    `check that the public key is in ~${plan.username}/.ssh/authorized_keys on the host (ssh-copy-id${plan.port !== SSH_DEFAULT_PORT ? ` -p ${plan.port}` : ''} ${plan.username}@${plan.host}) and that the user name is right`,
    err,
  );
}

interface SshLevelError extends Error {
  level?: string;
}

function openStreamLocal(client: InstanceType<typeof Client>, path: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    try {
      client.openssh_forwardOutStreamLocal(path, (err, ch) => (err ? reject(err) : resolve(ch)));
    } catch (err) {
      reject(err as Error);
    }
  });
}

function execHelper(client: InstanceType<typeof Client>, command: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    try {
      client.exec(command, (err, ch) => (err ? reject(err) : resolve(ch)));
    } catch (err) {
      reject(err as Error);
    }
  });
}

/** Open the channel to the daemon: first remote socket that works, else the helper. */
async function openDaemonChannel(client: InstanceType<typeof Client>, plan: SshPlan): Promise<{ channel: ClientChannel; target: string }> {
  const where = formatHostPort(plan.host, plan.port);
  const failures: string[] = [];
  for (const path of plan.remoteSockets) {
    try {
      const channel = await openStreamLocal(client, path);
      return { channel, target: path };
    } catch (err) {
      failures.push(`${path}: ${errMessage(err).replace(/^\(SSH\) /, '')}`);
    }
  }
  const socketsFailed = failures.length > 0 ? `could not open the libvirt socket (${failures.join('; ')})` : '';
  if (plan.helperCommand !== undefined) {
    try {
      const channel = await execHelper(client, plan.helperCommand);
      watchHelper(channel, plan, socketsFailed);
      return { channel, target: plan.helperCommand };
    } catch (err) {
      throw fail(
        'SSH_CHANNEL',
        `connected to ${where} over ssh but ${socketsFailed ? `${socketsFailed} and ` : ''}could not run '${plan.helperCommand}': ${errMessage(err)}`,
        'is libvirt running and installed there? or pass ?socket=/path/to/libvirt-sock',
        err,
      );
    }
  }
  throw fail(
    'SSH_CHANNEL',
    `connected to ${where} over ssh but ${socketsFailed}`,
    `is libvirtd running on ${plan.host}, and may ${plan.username} use its socket? the ssh server may also forbid socket forwarding (AllowStreamLocalForwarding / AllowTcpForwarding in its sshd_config): then use ?proxy=native (virt-ssh-helper)`,
  );
}

/**
 * ssh2 channels override destroy() (end + close, no error argument, and
 * `destroyed` is never set): report an error to the stream's listeners, if
 * any, then close it.
 */
function failChannel(channel: ClientChannel, err: Error): void {
  if (channel.listenerCount('error') > 0) channel.emit('error', err);
  channel.destroy();
}

/** virt-ssh-helper: if it exits with an error, fail the stream with its stderr. */
function watchHelper(channel: ClientChannel, plan: SshPlan, earlier: string): void {
  let stderr = '';
  // (only stderr is consumed here: a 'data' listener on the channel would start the flow before the RPC client listens)
  channel.stderr.on('data', (d: Buffer) => {
    if (stderr.length < 4096) stderr += d.toString('utf8');
  });
  channel.on('exit', (code: number | null, signal?: string) => {
    if (code === 0) return;
    const msg = stderr.trim().split('\n').pop() ?? '';
    const how = code !== null ? `exit ${code}` : `signal ${signal ?? '?'}`;
    failChannel(
      channel,
      fail(
        'SSH_CHANNEL',
        `${earlier ? `${earlier}; then ` : ''}'${plan.helperCommand}' failed on ${formatHostPort(plan.host, plan.port)} (${how})${msg ? `: ${msg}` : ''}`,
        code === 127
          ? 'virt-ssh-helper is not installed there: install libvirt there, or pass ?socket=/path/to/libvirt-sock'
          : `is the libvirt daemon running on ${plan.host}?`,
      ),
    );
  });
}

export async function connectSsh(uri: LibvirtUri, opts: TransportOptions = {}, env?: SshEnv): Promise<ConnectedTransport> {
  const plan = planSsh(uri, opts, env);
  return connectSshPlan(plan, opts);
}

export async function connectSshPlan(plan: SshPlan, opts: TransportOptions = {}): Promise<ConnectedTransport> {
  const where = formatHostPort(plan.host, plan.port);
  const signal = opts.signal;
  if (signal?.aborted) throw abortError(`connecting to ${where}`, signal);

  let entries: KnownHostEntry[];
  try {
    entries = readKnownHostsFile(plan.knownHostsFile);
  } catch (err) {
    throw fail('TRANSPORT', `cannot read known_hosts file ${plan.knownHostsFile}: ${errMessage(err)}`, 'check the file (or ?known_hosts=FILE)', err);
  }

  const notices: string[] = [];
  let hostKeyError: TransportError | undefined;
  const hostVerifier = (key: Buffer): boolean => {
    const check = checkHostKey(entries, plan.host, plan.port, key);
    const d = decideHostKey(check, plan.policy, plan.knownHostsFile, plan.host, plan.port, plan.home);
    if (!d.accept) {
      hostKeyError = d.error;
      return false;
    }
    if (d.record) {
      try {
        appendKnownHostsLine(plan.knownHostsFile, formatKnownHostsLine(plan.host, plan.port, key));
        notices.push(`Permanently added ${check.name} (${check.keyType} ${check.fingerprint}) to ${tildify(plan.knownHostsFile, plan.home)}`);
      } catch (err) {
        notices.push(`could not record the host key of ${check.name} in ${plan.knownHostsFile}: ${errMessage(err)}`);
      }
    } else if (check.status === 'unknown') {
      notices.push(`accepted unknown host key of ${check.name} (${check.keyType} ${check.fingerprint}) without recording it (known_hosts_verify=ignore)`);
    }
    return true;
  };

  const authHandler: AnyAuthMethod[] = [
    ...(plan.agent ? [{ type: 'agent' as const, username: plan.username, agent: plan.agent }] : []),
    ...plan.keys.map((k) => ({ type: 'publickey' as const, username: plan.username, key: k.key })),
  ];

  const client = new Client();
  const timeoutMs = timeoutOf(opts);
  const config: ConnectConfig = {
    host: plan.host,
    port: plan.port,
    username: plan.username,
    hostVerifier,
    authHandler,
    readyTimeout: timeoutMs,
    algorithms: {
      serverHostKey: preferredHostKeyAlgorithms(entries, plan.host, plan.port, SUPPORTED_HOST_KEY_ALGORITHMS) as ServerHostKeyAlgorithm[],
    },
  };

  // handshake + authentication + channel, under one deadline and the abort signal
  const channelInfo = await new Promise<{ channel: ClientChannel; target: string }>((resolve, reject) => {
    let settled = false;
    const settle = (err: TransportError | null, value?: { channel: ClientChannel; target: string }): void => {
      if (settled) {
        if (!err && value) value.channel.destroy();
        return;
      }
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      client.off('error', onError);
      client.off('close', onClose);
      if (err) {
        client.on('error', () => {}); // late errors of the dying connection must not crash the process
        client.end();
        client.destroy();
        reject(err);
      } else resolve(value!);
    };
    const onError = (err: SshLevelError): void => {
      if (err.level === 'agent') return; // ssh2 goes on with the next method
      if (hostKeyError) return settle(hostKeyError);
      if (err.level === 'client-authentication') return settle(authFailed(plan, err));
      if (err.level === 'client-timeout') {
        return settle(fail('TIMEOUT', `timed out after ${timeoutMs / 1000}s waiting for the ssh handshake with ${where}`, 'is this an ssh server? is the host reachable?', err));
      }
      if (err.level === 'client-socket' || errnoCode(err) !== undefined) return settle(describeTcpError(plan.host, plan.port, err, 'ssh'));
      settle(fail('TRANSPORT', `ssh connection to ${where} failed: ${errMessage(err)}`, undefined, err));
    };
    const onClose = (): void => settle(hostKeyError ?? fail('TRANSPORT', `ssh connection to ${where} closed during the handshake`, 'check the sshd logs on the host'));
    const onAbort = (): void => settle(abortError(`connecting to ${where}`, signal!));
    const timer = setTimeout(
      () => settle(fail('TIMEOUT', `timed out after ${timeoutMs / 1000}s connecting to ${where} over ssh`, 'check that the host is reachable and sshd is running')),
      timeoutMs,
    );
    timer.unref?.();
    client.on('error', onError);
    client.on('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
    client.once('ready', () => {
      openDaemonChannel(client, plan).then(
        (v) => settle(null, v),
        (err: unknown) => settle(err instanceof TransportError ? err : fail('SSH_CHANNEL', errMessage(err), undefined, err)),
      );
    });
    try {
      client.connect(config);
    } catch (err) {
      settle(fail('TRANSPORT', `ssh connection to ${where} failed: ${errMessage(err)}`, undefined, err));
    }
  });

  const { channel, target } = channelInfo;
  let channelClosed = false;
  let clientClosed = false;
  const teardown = (): void => {
    if (!channelClosed) channel.destroy();
    if (!clientClosed) client.end();
  };
  // after setup: a dead ssh connection fails the stream, a closed stream ends the ssh connection
  client.on('error', (err: Error) => {
    if (!channelClosed) failChannel(channel, fail('TRANSPORT', `ssh connection to ${where} failed: ${errMessage(err)}`, undefined, err));
  });
  client.on('close', () => {
    clientClosed = true;
    // ssh2 closes its channels itself when the connection goes away
  });
  channel.on('close', () => {
    channelClosed = true;
    if (!clientClosed) client.end();
  });

  const user = plan.username;
  const transport: ConnectedTransport = {
    stream: channel,
    description: `ssh:${user}@${where}${target === plan.helperCommand ? ` (${target})` : `:${target}`}`,
    close: teardown,
    notices,
    openTcp: (host, port) =>
      new Promise((resolve, reject) => {
        if (clientClosed || channelClosed) {
          reject(fail('SSH_CHANNEL', `cannot open a tunnel to ${formatHostPort(host, port)} on ${where}: the ssh connection is closed`, undefined));
          return;
        }
        client.forwardOut('127.0.0.1', 0, host, port, (err, ch) => {
          if (!err) return resolve(ch);
          // "Connection refused" etc. come back as a channel open failure (reason 2: connect failed)
          const reason = (err as Error & { reason?: number }).reason;
          reject(
            fail(
              reason === 2 ? 'CONNECT_FAILED' : 'SSH_CHANNEL',
              `${where} could not connect to ${formatHostPort(host, port)} on its side: ${errMessage(err).replace(/^\(SSH\) /, '')}`,
              reason === 1 ? 'sshd there forbids TCP forwarding (AllowTcpForwarding no); allow it for this user' : undefined,
              err,
            ),
          );
        });
      }),
  };
  return transport;
}
