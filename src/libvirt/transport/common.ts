/** Helpers shared by the socket-based transports. */
import type { Socket } from 'node:net';
import { HostKeyError, TransportError, abortError } from './errors.js';
import type { TransportOptions } from './types.js';

export const DEFAULT_TIMEOUT_MS = 30_000;

export function timeoutOf(opts: TransportOptions | undefined): number {
  const t = opts?.timeoutMs;
  return t !== undefined && t > 0 ? t : DEFAULT_TIMEOUT_MS;
}

/**
 * Wait until `sock` emits `event` ('connect' or 'secureConnect'), enforcing
 * the connect timeout and the abort signal. On failure the socket is
 * destroyed and the error is translated by `describe`.
 */
export function waitForSocket<T extends Socket>(
  sock: T,
  event: 'connect' | 'secureConnect',
  what: string,
  opts: TransportOptions | undefined,
  describe: (err: Error) => TransportError,
): Promise<T> {
  const timeoutMs = timeoutOf(opts);
  const signal = opts?.signal;
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const finish = (err: TransportError | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.off(event, onConnect);
      sock.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
      if (err) {
        sock.destroy();
        reject(err);
      } else {
        resolve(sock);
      }
    };
    const onConnect = (): void => finish(null);
    const onError = (err: Error): void => finish(describe(err));
    const onAbort = (): void => finish(abortError(`connecting to ${what}`, signal!));
    const timer = setTimeout(() => {
      finish(
        new TransportError('TIMEOUT', `timed out after ${timeoutMs / 1000}s connecting to ${what}`, {
          hint: 'check that the host is reachable and the daemon is listening, or raise the timeout',
        }),
      );
    }, timeoutMs);
    timer.unref?.();
    if (signal?.aborted) {
      onAbort();
      return;
    }
    sock.once(event, onConnect);
    sock.on('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Build a transport error: the problem as message, the fix as hint. */
export function fail(
  code: ConstructorParameters<typeof TransportError>[0],
  problem: string,
  fix: string | undefined,
  cause?: unknown,
): TransportError {
  const o = { ...(fix !== undefined ? { hint: fix } : {}), ...(cause !== undefined ? { cause } : {}) };
  return code.startsWith('SSH_HOSTKEY') ? new HostKeyError(code, problem, o) : new TransportError(code, problem, o);
}
