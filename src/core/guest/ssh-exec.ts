/** Commands and shells in a guest over an open GuestConnection (ssh-connect.ts). */
import { constants as osConstants } from 'node:os';
import { Readable, Writable } from 'node:stream';
import type { WriteStream } from 'node:tty';
import type { ClientChannel, PseudoTtyOptions } from 'ssh2';
import type { GuestConnection } from './ssh-connect.js';
import { abortedError, sshError } from './ssh-errors.js';

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
