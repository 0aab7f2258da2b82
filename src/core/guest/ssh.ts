/**
 * SSH into guests (ssh2 client): `vmctl ssh`, `vmctl ip`, readiness waits.
 *
 * Host keys are verified strictly from the very first connection: vmctl
 * injected the guest's host key through cloud-init and pinned its public half
 * in the VM's known_hosts (cloudinit.ts pinHostKey), so a guest presenting
 * anything else is refused loudly (VmctlError HOST_KEY) — there is no trust on
 * first use and no retry.
 *
 * Errors carry `details.sshStage` saying how far a connection got:
 *   port-closed  connection refused, or closed/reset before an SSH banner
 *                (a QEMU user-mode forward accepts and then drops connections
 *                while nothing listens inside the guest)
 *   no-banner    the port is open but no SSH identification arrived in time
 *   handshake    sshd answered, key exchange did not finish
 *   host-key     the host key is not the pinned one (fatal)
 *   auth         host key fine, our key refused (cloud-init has not written
 *                authorized_keys yet, or the wrong key)
 *   channel      connected, but a session channel failed
 */
import { constants as osConstants } from 'node:os';
import { Readable, Writable, type Duplex } from 'node:stream';
import type { WriteStream } from 'node:tty';
import ssh2 from 'ssh2';
import type { AnyAuthMethod, ClientChannel, ConnectConfig, PseudoTtyOptions, ServerHostKeyAlgorithm } from 'ssh2';
import {
  entryMatchesName,
  fingerprintSha256,
  hostKeyAlgorithmsForType,
  keyTypeOfBlob,
  readKnownHostsFile,
  type KnownHostEntry,
} from '../../libvirt/transport/known-hosts.js';
import { SUPPORTED_HOST_KEY_ALGORITHMS } from '../../libvirt/transport/ssh.js';
import { hostPatternFor } from './cloudinit.js';
import { VmctlError, type ErrorCode } from '../errors.js';

const { Client } = ssh2;
type SshClient = InstanceType<typeof Client>;

export type SshStage = 'port-closed' | 'no-banner' | 'handshake' | 'host-key' | 'auth' | 'channel';

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

const DEFAULT_TIMEOUT_MS = 20_000;

function sshError(code: ErrorCode, stage: SshStage, message: string, opts: { hint?: string; cause?: unknown; details?: Record<string, unknown> } = {}): VmctlError {
  return new VmctlError(code, message, {
    ...(opts.hint !== undefined ? { hint: opts.hint } : {}),
    ...(opts.cause !== undefined ? { cause: opts.cause } : {}),
    details: { sshStage: stage, ...opts.details },
  });
}

/** How far a failed connection got (from VmctlError details), if it is one of ours. */
export function sshStageOf(err: unknown): SshStage | undefined {
  if (!(err instanceof VmctlError)) return undefined;
  const s = err.details?.sshStage;
  return typeof s === 'string' ? (s as SshStage) : undefined;
}

function abortedError(what: string, signal: AbortSignal): VmctlError {
  const reason = signal.reason as unknown;
  const timeout = reason instanceof Error && reason.name === 'TimeoutError';
  return new VmctlError(timeout ? 'TIMEOUT' : 'CONNECTION', `${what}: ${timeout ? 'timed out' : 'aborted'}`, {
    cause: reason,
    details: { aborted: true },
  });
}

interface PinCheck {
  readonly ok: boolean;
  readonly error?: VmctlError;
  readonly type: string;
  readonly fingerprint: string;
}

/** Strict check of a presented host key blob against the entries pinned for `pattern`. */
export function checkPinnedHostKey(entries: readonly KnownHostEntry[], pattern: string, key: Buffer, file: string): PinCheck {
  const name = pattern.toLowerCase();
  const type = keyTypeOfBlob(key) ?? 'unknown-key-type';
  const fingerprint = fingerprintSha256(key);
  const forHost = entries.filter((e) => e.marker !== 'cert-authority' && entryMatchesName(e, name));
  const details = { hostPattern: name, knownHostsFile: file, presented: `${type} ${fingerprint}` };
  if (forHost.some((e) => e.marker === 'revoked' && e.key.equals(key))) {
    return {
      ok: false,
      type,
      fingerprint,
      error: sshError('HOST_KEY', 'host-key', `host key ${type} ${fingerprint} of ${name} is marked @revoked in ${file}`, {
        hint: 'refusing to connect',
        details,
      }),
    };
  }
  const pinned = forHost.filter((e) => e.marker === undefined);
  if (pinned.some((e) => e.key.equals(key))) return { ok: true, type, fingerprint };
  if (pinned.length === 0) {
    return {
      ok: false,
      type,
      fingerprint,
      error: sshError('HOST_KEY', 'host-key', `no host key pinned for ${name} in ${file} (the server presents ${type} ${fingerprint})`, {
        hint: 'vmctl pins the guest host key it injects when it creates the VM; vmctl never trusts a key on first use',
        details,
      }),
    };
  }
  const expected = pinned.map((e) => `${e.keyType} ${fingerprintSha256(e.key)}`).join(', ');
  return {
    ok: false,
    type,
    fingerprint,
    error: sshError(
      'HOST_KEY',
      'host-key',
      `HOST KEY MISMATCH for ${name}: the server presents ${type} ${fingerprint}, but ${file} pins ${expected}`,
      {
        hint: 'something other than the guest may be answering on this address, or the guest did not get the host key vmctl injected; refusing to connect',
        details: { ...details, pinned: expected },
      },
    ),
  };
}

function hostKeyAlgorithms(entries: readonly KnownHostEntry[], pattern: string): ServerHostKeyAlgorithm[] {
  const known: string[] = [];
  for (const e of entries) {
    if (e.marker !== undefined || !entryMatchesName(e, pattern)) continue;
    for (const a of hostKeyAlgorithmsForType(e.keyType)) if (!known.includes(a)) known.push(a);
  }
  const first = SUPPORTED_HOST_KEY_ALGORITHMS.filter((a) => known.includes(a));
  return [...first, ...SUPPORTED_HOST_KEY_ALGORITHMS.filter((a) => !first.includes(a))];
}

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
      bannerSeen = true;
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
        const m = /^Remote ident: '(.*)'$/.exec(msg);
        serverIdent = m ? m[1] : msg.slice('Remote ident: '.length);
      }
    },
  };

  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => fail(stageError(new Error('timed out'), true)), timeoutMs + 1000);
    const onAbort = (): void => fail(abortedError(`ssh to ${where}`, signal!));
    signal?.addEventListener('abort', onAbort, { once: true });

    function cleanup(): void {
      settled = true;
      clearTimeout(timer);
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

// ---------------------------------------------------------------------------
// commands

export interface GuestExecOptions {
  /** piped to the command's stdin; without it stdin is closed at once */
  readonly stdin?: Readable;
  /** receive the command's output (not ended afterwards); without them output is discarded */
  readonly stdout?: Writable;
  readonly stderr?: Writable;
  /** allocate a pseudo-terminal (size from stdout when it is a TTY) */
  readonly pty?: boolean;
  /** TERM for the pty (default $TERM, else xterm-256color) */
  readonly term?: string;
  /** abort: the channel is closed and the promise rejects */
  readonly signal?: AbortSignal;
}

function signalExitCode(signal: string | undefined): number {
  if (!signal) return 255;
  const name = (signal.startsWith('SIG') ? signal : `SIG${signal}`) as keyof typeof osConstants.signals;
  const n = osConstants.signals[name];
  return 128 + (typeof n === 'number' ? n : 0);
}

function ttySize(out: Writable | undefined): { rows: number; cols: number } | undefined {
  const tty = out as Partial<WriteStream> | undefined;
  if (tty?.isTTY && typeof tty.rows === 'number' && typeof tty.columns === 'number') return { rows: tty.rows, cols: tty.columns };
  return undefined;
}

function ptyOptions(out: Writable | undefined, term: string | undefined): PseudoTtyOptions {
  const size = ttySize(out) ?? { rows: 24, cols: 80 };
  return { term: term ?? process.env.TERM ?? 'xterm-256color', rows: size.rows, cols: size.cols, width: 0, height: 0 };
}

function openChannel(conn: GuestConnection, what: string, open: (cb: (err: Error | undefined, ch: ClientChannel) => void) => void): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    try {
      open((err, ch) => {
        if (err) reject(sshError('CONNECTION', 'channel', `ssh ${conn.user}@${conn.host}:${conn.port}: ${what} failed: ${err.message}`, { cause: err }));
        else resolve(ch);
      });
    } catch (err) {
      reject(sshError('CONNECTION', 'channel', `ssh ${conn.user}@${conn.host}:${conn.port}: ${what} failed: ${(err as Error).message}`, { cause: err }));
    }
  });
}

/** Wire a session channel to streams; resolves with the exit status (signal → 128+n). */
function runChannel(conn: GuestConnection, channel: ClientChannel, opts: GuestExecOptions, onDone?: () => void): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let exitCode: number | undefined;
    let exitSignal: string | undefined;
    let settled = false;
    let channelClosed = false;
    let stderrDone = false;
    channel.on('exit', (code: number | null, signal?: string) => {
      if (typeof code === 'number') exitCode = code;
      else exitSignal = signal ?? 'UNKNOWN';
    });
    if (opts.stdout) channel.pipe(opts.stdout, { end: false });
    else channel.resume();
    if (opts.stderr) channel.stderr.pipe(opts.stderr, { end: false });
    else channel.stderr.resume();
    channel.stderr.once('end', () => {
      stderrDone = true;
      finish();
    });
    channel.stderr.once('close', () => {
      stderrDone = true;
      finish();
    });
    if (opts.stdin) {
      opts.stdin.pipe(channel);
    } else {
      channel.end();
    }
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      cleanup();
      try {
        channel.signal('KILL');
      } catch {
        // not supported or already closed
      }
      channel.close();
      reject(abortedError(`ssh ${conn.user}@${conn.host}:${conn.port}`, opts.signal!));
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const onConnClose = (): void => {
      channelClosed = true;
      stderrDone = true;
      finish();
    };
    conn.client.once('close', onConnClose);

    function cleanup(): void {
      opts.signal?.removeEventListener('abort', onAbort);
      conn.client.off('close', onConnClose);
      if (opts.stdin) opts.stdin.unpipe(channel);
      if (opts.stdout) channel.unpipe(opts.stdout);
      if (opts.stderr) channel.stderr.unpipe(opts.stderr);
      onDone?.();
    }
    function finish(): void {
      if (settled || !channelClosed || !stderrDone) return;
      settled = true;
      cleanup();
      if (exitCode !== undefined) resolve(exitCode);
      else if (exitSignal !== undefined) resolve(signalExitCode(exitSignal));
      else {
        reject(
          sshError('CONNECTION', 'channel', `ssh ${conn.user}@${conn.host}:${conn.port}: the session ended without an exit status (connection lost?)`),
        );
      }
    }
    channel.once('close', () => {
      channelClosed = true;
      finish();
    });
    if (opts.signal?.aborted) onAbort();
  });
}

/**
 * Run a command in the guest (through the login shell, as ssh does) with
 * stdin/stdout/stderr wired to the given streams; resolves with its exit
 * status (killed by a signal → 128 + signal number).
 */
export async function guestExec(conn: GuestConnection, command: string, opts: GuestExecOptions = {}): Promise<number> {
  if (opts.signal?.aborted) throw abortedError(`ssh ${conn.user}@${conn.host}:${conn.port}`, opts.signal);
  const channel = await openChannel(conn, 'exec', (cb) =>
    conn.client.exec(command, opts.pty ? { pty: ptyOptions(opts.stdout, opts.term) } : {}, cb),
  );
  return runChannel(conn, channel, opts);
}

export interface GuestCaptureResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run a command and collect its output (at most maxBytes of each stream; default 4 MiB). */
export async function guestCapture(
  conn: GuestConnection,
  command: string,
  opts: { stdin?: string | Buffer; signal?: AbortSignal; timeoutMs?: number; maxBytes?: number } = {},
): Promise<GuestCaptureResult> {
  const max = opts.maxBytes ?? 4 * 1024 * 1024;
  const collector = (): { stream: Writable; text: () => string } => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stream = new Writable({
      write(chunk: Buffer, _enc, cb) {
        if (size < max) {
          chunks.push(chunk.subarray(0, max - size));
          size += chunk.length;
        }
        cb();
      },
    });
    return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
  };
  const out = collector();
  const err = collector();
  const controller = new AbortController();
  const onOuter = (): void => controller.abort(opts.signal!.reason);
  opts.signal?.addEventListener('abort', onOuter, { once: true });
  if (opts.signal?.aborted) onOuter();
  const timer =
    opts.timeoutMs !== undefined
      ? setTimeout(() => controller.abort(new DOMException(`command timed out after ${opts.timeoutMs} ms`, 'TimeoutError')), opts.timeoutMs)
      : undefined;
  try {
    const code = await guestExec(conn, command, {
      ...(opts.stdin !== undefined ? { stdin: Readable.from([Buffer.from(opts.stdin)]) } : {}),
      stdout: out.stream,
      stderr: err.stream,
      signal: controller.signal,
    });
    return { code, stdout: out.text(), stderr: err.text() };
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onOuter);
  }
}

export interface GuestShellOptions {
  readonly stdin: Readable;
  readonly stdout: Writable;
  readonly stderr?: Writable;
  /** TERM (default $TERM, else xterm-256color) */
  readonly term?: string;
  /** window size when stdout is not a TTY (default 24x80) */
  readonly rows?: number;
  readonly cols?: number;
}

/**
 * Interactive login shell with a pty sized like stdout (kept in sync on
 * 'resize' when stdout is a TTY). Raw mode on the local terminal is the
 * caller's business. Resolves with the shell's exit status.
 */
export async function guestShell(conn: GuestConnection, opts: GuestShellOptions): Promise<number> {
  const size = ttySize(opts.stdout) ?? { rows: opts.rows ?? 24, cols: opts.cols ?? 80 };
  const window: PseudoTtyOptions = { term: opts.term ?? process.env.TERM ?? 'xterm-256color', rows: size.rows, cols: size.cols, width: 0, height: 0 };
  const channel = await openChannel(conn, 'shell', (cb) => conn.client.shell(window, cb));
  const tty = opts.stdout as Partial<WriteStream>;
  const onResize = (): void => {
    const s = ttySize(opts.stdout);
    if (s) channel.setWindow(s.rows, s.cols, 0, 0);
  };
  if (tty.isTTY && typeof tty.on === 'function') tty.on('resize', onResize);
  return runChannel(conn, channel, { stdin: opts.stdin, stdout: opts.stdout, ...(opts.stderr ? { stderr: opts.stderr } : {}) }, () => {
    if (tty.isTTY && typeof tty.off === 'function') tty.off('resize', onResize);
  });
}

// ---------------------------------------------------------------------------
// readiness

export interface SshAttempt {
  /** 1-based */
  readonly attempt: number;
  /** 'ready' on success */
  readonly stage: SshStage | 'ready';
  /** since waitForSsh was called */
  readonly elapsedMs: number;
  readonly error?: VmctlError;
}

export interface WaitForSshOptions {
  readonly signal?: AbortSignal;
  /** overall deadline (default 600000) */
  readonly timeoutMs?: number;
  /** pause between attempts (default 1000) */
  readonly intervalMs?: number;
  /** deadline of one attempt (default target.timeoutMs, else 20000) */
  readonly attemptTimeoutMs?: number;
  readonly onAttempt?: (a: SshAttempt) => void;
}

const STAGE_TEXT: Record<SshStage, string> = {
  'port-closed': 'port closed (sshd not listening yet)',
  'no-banner': 'port open but no SSH banner',
  handshake: 'sshd answered but the key exchange did not finish',
  'host-key': 'host key mismatch',
  auth: 'sshd up with the pinned host key, login not accepted yet',
  channel: 'session failed',
};

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Retry connectGuest until the guest's sshd presents the pinned host key and
 * accepts our login; returns that connection (the caller closes it). A host
 * key mismatch is fatal at once; other failures are retried until timeoutMs
 * (VmctlError TIMEOUT naming the last stage).
 */
export async function waitForSsh(target: GuestTarget, opts: WaitForSshOptions = {}): Promise<GuestConnection> {
  const start = Date.now();
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const deadline = start + timeoutMs;
  const where = `${target.user}@${target.host}:${target.port}`;
  let last: VmctlError | undefined;
  let lastStage: SshStage | undefined;
  for (let attempt = 1; ; attempt++) {
    if (opts.signal?.aborted) throw abortedError(`waiting for ssh on ${where}`, opts.signal);
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      throw new VmctlError('TIMEOUT', `ssh on ${where} not ready after ${Math.round(timeoutMs / 1000)} s (last: ${lastStage ? STAGE_TEXT[lastStage] : 'no attempt'})`, {
        hint: 'is the guest booting? look at its serial console',
        ...(last ? { cause: last } : {}),
        details: { sshStage: lastStage, attempts: attempt - 1 },
      });
    }
    try {
      const conn = await connectGuest({
        ...target,
        timeoutMs: Math.max(1000, Math.min(opts.attemptTimeoutMs ?? target.timeoutMs ?? DEFAULT_TIMEOUT_MS, remaining)),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      opts.onAttempt?.({ attempt, stage: 'ready', elapsedMs: Date.now() - start });
      return conn;
    } catch (err) {
      const stage = sshStageOf(err);
      if (!stage || !(err instanceof VmctlError)) throw err; // aborted, bad input
      last = err;
      lastStage = stage;
      opts.onAttempt?.({ attempt, stage, elapsedMs: Date.now() - start, error: err });
      if (stage === 'host-key') throw err;
    }
    await sleep(Math.min(opts.intervalMs ?? 1000, Math.max(0, deadline - Date.now())), opts.signal);
  }
}

export interface CloudInitStatus {
  /** 'done', 'error', 'degraded', 'disabled', 'running', 'not run' (cloud-init's own words) */
  readonly status: string;
  /** newer cloud-init: e.g. 'degraded done' */
  readonly extendedStatus?: string;
  readonly errors: readonly string[];
  /** newer cloud-init: warnings/deprecations per level */
  readonly recoverableErrors?: Readonly<Record<string, readonly string[]>>;
  readonly detail: string;
  readonly bootStatusCode?: string;
  readonly datasource?: string;
  readonly lastUpdate?: string;
  /** exit status of `cloud-init status` */
  readonly exitCode: number;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

export function parseCloudInitStatusJson(text: string, exitCode: number): CloudInitStatus | undefined {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (j === null || typeof j !== 'object' || typeof (j as Record<string, unknown>).status !== 'string') return undefined;
  const o = j as Record<string, unknown>;
  const errors = Array.isArray(o.errors) ? o.errors.map(String) : [];
  let recoverable: Record<string, string[]> | undefined;
  if (o.recoverable_errors && typeof o.recoverable_errors === 'object') {
    recoverable = {};
    for (const [k, v] of Object.entries(o.recoverable_errors as Record<string, unknown>)) {
      if (Array.isArray(v)) recoverable[k] = v.map(String);
    }
  }
  const extended = str(o.extended_status);
  const boot = str(o.boot_status_code);
  const ds = str(o.datasource);
  const last = str(o.last_update);
  return {
    status: o.status as string,
    ...(extended !== undefined ? { extendedStatus: extended } : {}),
    errors,
    ...(recoverable ? { recoverableErrors: recoverable } : {}),
    detail: str(o.detail) ?? '',
    ...(boot !== undefined ? { bootStatusCode: boot } : {}),
    ...(ds ? { datasource: ds } : {}),
    ...(last ? { lastUpdate: last } : {}),
    exitCode,
  };
}

/** `cloud-init status --long` (tabular) output, for cloud-init without --format. */
export function parseCloudInitStatusText(text: string, exitCode: number): CloudInitStatus | undefined {
  const lines = text.replace(/^\.+/, '').split('\n');
  let status: string | undefined;
  let boot: string | undefined;
  let last: string | undefined;
  const detail: string[] = [];
  let inDetail = false;
  for (const raw of lines) {
    const line = raw.replace(/^\.+/, '');
    if (inDetail) {
      detail.push(line);
      continue;
    }
    let m: RegExpExecArray | null;
    if ((m = /^status: (.*)$/.exec(line))) status = m[1]!.trim();
    else if ((m = /^boot_status_code: (.*)$/.exec(line))) boot = m[1]!.trim();
    else if ((m = /^last_update: (.*)$/.exec(line))) last = m[1]!.trim();
    else if (/^detail:/.test(line)) inDetail = true;
  }
  if (status === undefined) return undefined;
  const d = detail.join('\n').trim();
  return {
    status,
    errors: status === 'error' && d ? d.split('\n') : [],
    detail: d,
    ...(boot !== undefined ? { bootStatusCode: boot } : {}),
    ...(last !== undefined ? { lastUpdate: last } : {}),
    exitCode,
  };
}

/**
 * Wait for cloud-init in the guest to finish (`cloud-init status --wait
 * --format json`, falling back to `--long` for cloud-init without --format)
 * and return its status and errors. It does not throw when cloud-init
 * reports errors: look at `status` / `errors`.
 */
export async function waitForCloudInit(conn: GuestConnection, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<CloudInitStatus> {
  const run = async (cmd: string): Promise<GuestCaptureResult> => {
    try {
      return await guestCapture(conn, cmd, {
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      });
    } catch (err) {
      if (err instanceof VmctlError && err.code === 'TIMEOUT' && err.details?.aborted) {
        throw new VmctlError('TIMEOUT', `cloud-init in ${conn.host}:${conn.port} did not finish within ${Math.round((opts.timeoutMs ?? 0) / 1000)} s`, {
          hint: "look at 'cloud-init status --long' and /var/log/cloud-init.log in the guest",
          cause: err,
        });
      }
      throw err;
    }
  };
  const r = await run('cloud-init status --wait --format json');
  const parsed = parseCloudInitStatusJson(r.stdout, r.code);
  if (parsed) return parsed;
  if (r.code === 127) {
    throw new VmctlError('UNSUPPORTED', 'cloud-init is not installed in the guest', { hint: 'use an image with cloud-init' });
  }
  if (/unrecognized arguments|invalid choice|--format/.test(r.stderr)) {
    const t = await run('cloud-init status --wait --long');
    const p = parseCloudInitStatusText(t.stdout, t.code);
    if (p) return p;
    throw new VmctlError('INTERNAL', `cannot parse 'cloud-init status --long' output: ${JSON.stringify(t.stdout.slice(0, 200))}`);
  }
  throw new VmctlError('INTERNAL', `'cloud-init status' failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 300)}`);
}
