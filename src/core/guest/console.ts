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

/** Open the domain's serial console and pump it (see the file comment). */
export async function attachConsole(dom: Pick<Domain, 'openConsole'>, io: ConsoleIo): Promise<ConsoleEnd> {
  if (io.signal?.aborted) return 'aborted';
  return pumpConsole(await dom.openConsole(), io);
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
