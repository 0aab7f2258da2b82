/** Readiness: retry connecting until the guest's sshd takes our login with the pinned host key. */
import { VmctlError } from '../errors.js';
import { connectGuest, DEFAULT_TIMEOUT_MS, type GuestConnection, type GuestTarget } from './ssh-connect.js';
import { abortedError, sshStageOf, type SshStage } from './ssh-errors.js';

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
  let noBanner = 0;
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
      // a banner must come within 3 s, 6 s, 9 s… (growing with each attempt that saw none, so a
      // slow sshd still gets through): a connection parked in a user-mode forward is dropped early
      const bannerTimeoutMs = Math.min(30_000, 3000 * (noBanner + 1));
      const conn = await connectGuest({
        ...target,
        bannerTimeoutMs,
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
      if (stage === 'no-banner') noBanner++;
      opts.onAttempt?.({ attempt, stage, elapsedMs: Date.now() - start, error: err });
      if (stage === 'host-key') throw err;
    }
    await sleep(Math.min(opts.intervalMs ?? 1000, Math.max(0, deadline - Date.now())), opts.signal);
  }
}
