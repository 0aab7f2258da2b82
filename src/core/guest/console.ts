/**
 * The serial console pump: the user's bytes go to the guest's console stream,
 * the guest's bytes to the output, until the user types the escape byte
 * (Ctrl-] by default; what comes before it in the same chunk is still sent),
 * the input ends, the console stream ends or fails, or `signal` aborts.
 * A TTY input is put in raw mode for the session and restored afterwards.
 * Never prints anything of its own: the caller renders the banner.
 */
import type { Duplex, Readable, Writable } from 'node:stream';
import type { Domain } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VmctlError } from '../errors.js';

/** Ctrl-] (GS), as in virsh console and telnet */
export const CONSOLE_ESCAPE = 0x1d;

/** Why attachConsole returned. */
export type ConsoleEnd = 'escape' | 'input-end' | 'console-end' | 'console-error' | 'aborted';

export interface ConsoleIo {
  /** the user's keystrokes (process.stdin) */
  readonly input: Readable & { isTTY?: boolean; setRawMode?: (on: boolean) => unknown };
  /** where the guest's output goes (process.stdout) */
  readonly output: Writable;
  /** the byte that leaves (default CONSOLE_ESCAPE) */
  readonly escape?: number;
  readonly signal?: AbortSignal;
}

/** A console stream: any Duplex; `abort()` (libvirt streams) is called when the session ends. */
export type ConsoleStream = Duplex & { abort?: (reason?: Error) => void };

/** VIR_DOMAIN_CONSOLE_FORCE: take the console over from another session */
const CONSOLE_FORCE = 1;

/** The line vmctl's image prints on the serial console once sshd is up (vmctl-seed-late.service). */
export const SSHD_READY_MARKER = 'vmctl: sshd ready';

/**
 * Open the domain's serial console and pump it (see the file comment). One session at a time,
 * as in virsh: a console in use elsewhere is refused with the fix (`force` takes it over).
 */
export async function attachConsole(dom: Pick<Domain, 'openConsole' | 'name'>, io: ConsoleIo, opts: { force?: boolean; onOpen?: () => void } = {}): Promise<ConsoleEnd> {
  if (io.signal?.aborted) return 'aborted';
  let stream: ConsoleStream;
  try {
    stream = await dom.openConsole(null, opts.force ? CONSOLE_FORCE : 0);
  } catch (e) {
    if (e instanceof LibvirtError && /active console session exists/i.test(e.message)) {
      throw new VmctlError('CONFLICT', `the serial console of ${dom.name} is in use by another session`, {
        hint: `leave that session (vmctl create and start watch the console until sshd answers, a few seconds), or take it over with vmctl console ${dom.name} --force`,
        cause: e,
      });
    }
    throw e;
  }
  opts.onOpen?.();
  return pumpConsole(stream, io);
}

/**
 * Watch the domain's serial console until `marker` appears in its output: true then, false when
 * the console cannot be opened (busy, none), ends, fails or `signal` aborts. Never takes the
 * console from another session and never writes to it; the stream is closed when this settles
 * (a user's `vmctl console --force` takes it over: false). A pty drops what nobody reads, so
 * this sees only output from its opening on.
 */
export async function watchConsoleFor(dom: Pick<Domain, 'openConsole'>, marker: string, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false;
  let stream: ConsoleStream;
  try {
    stream = await dom.openConsole(null, 0);
  } catch {
    return false;
  }
  return scanForMarker(stream, marker, signal);
}

/** The scan of watchConsoleFor, on an open stream (aborted when it settles). */
export function scanForMarker(stream: ConsoleStream, marker: string, signal: AbortSignal): Promise<boolean> {
  const needle = Buffer.from(marker, 'utf8');
  return new Promise<boolean>((resolve) => {
    let tail: Buffer = Buffer.alloc(0);
    let finished = false;
    const finish = (seen: boolean) => {
      if (finished) return;
      finished = true;
      stream.off('data', onData);
      stream.off('end', onEnd);
      signal.removeEventListener('abort', onEnd);
      stream.on('error', () => {}); // whatever the closed stream still reports
      if (stream.abort) stream.abort();
      else stream.destroy();
      resolve(seen);
    };
    const onData = (b: Buffer) => {
      const buf = tail.length > 0 ? Buffer.concat([tail, b]) : b;
      if (buf.includes(needle)) return finish(true);
      // a marker split across chunks: keep what could be its start
      tail = Buffer.from(buf.subarray(Math.max(0, buf.length - needle.length + 1)));
    };
    const onEnd = () => finish(false);
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onEnd);
    signal.addEventListener('abort', onEnd, { once: true });
    if (signal.aborted) finish(false);
  });
}

/** The pump itself, on an already open console stream (which it aborts when done). */
export function pumpConsole(stream: ConsoleStream, io: ConsoleIo): Promise<ConsoleEnd> {
  const { input, output, signal } = io;
  const escape = io.escape ?? CONSOLE_ESCAPE;
  const raw = input.isTTY === true && typeof input.setRawMode === 'function';
  return new Promise<ConsoleEnd>((resolve) => {
    let finished = false;
    const finish = (why: ConsoleEnd) => {
      if (finished) return;
      finished = true;
      input.off('data', onInput);
      input.off('end', onInputEnd);
      stream.off('data', onOutput);
      stream.off('end', onStreamEnd);
      stream.off('error', onStreamError);
      signal?.removeEventListener('abort', onAbort);
      if (raw) input.setRawMode?.(false);
      input.pause();
      if (stream.abort) stream.abort();
      else stream.destroy();
      resolve(why);
    };
    const onInput = (b: Buffer) => {
      const esc = b.indexOf(escape);
      if (esc >= 0) {
        if (esc > 0) stream.write(b.subarray(0, esc));
        return finish('escape');
      }
      stream.write(b);
    };
    const onOutput = (d: Buffer) => output.write(d);
    const onInputEnd = () => finish('input-end');
    const onStreamEnd = () => finish('console-end');
    const onStreamError = () => finish('console-error');
    const onAbort = () => finish('aborted');
    if (raw) input.setRawMode?.(true);
    input.on('data', onInput);
    input.once('end', onInputEnd);
    stream.on('data', onOutput);
    stream.once('end', onStreamEnd);
    stream.once('error', onStreamError);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
