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
  /** pause between attempts (default 500) */
  readonly intervalMs?: number;
  /** deadline of one attempt (default target.timeoutMs, else 20000) */
  readonly attemptTimeoutMs?: number;
  readonly onAttempt?: (a: SshAttempt) => void;
  /**
   * Resolves true when the guest says its sshd is ready (vmctl's image prints a line on the serial
   * console): an attempt is then made at once, beside silent ones, instead of at the next hedge.
   * Only a hint: the attempt is verified like any other; false or never changes nothing.
   */
  readonly readyHint?: Promise<boolean>;
  /** hedge spacing (default HEDGE_MS) */
  readonly hedgeMs?: number;
  /** which failures are tried again (default: all but a host key mismatch); any other is thrown at once */
  readonly retry?: (stage: SshStage) => boolean;
}

const STAGE_TEXT: Record<SshStage, string> = {
  'port-closed': 'port closed (sshd not listening yet)',
  'no-banner': 'port open but no SSH banner',
  handshake: 'sshd answered but the key exchange did not finish',
  'host-key': 'host key mismatch',
  auth: 'sshd up with the pinned host key, login not accepted yet',
  channel: 'session failed',
};

/** attempts in flight at most: one, plus hedges for attempts that saw no SSH banner yet */
export const MAX_IN_FLIGHT = 6;
/** an attempt without a banner after this long gets a fresh one beside it */
export const HEDGE_MS = 2000;

/**
 * Retry connectGuest until the guest's sshd presents the pinned host key and
 * accepts our login; returns that connection (the caller closes it). A host
 * key mismatch is fatal at once; other failures are retried until timeoutMs
 * (VmctlError TIMEOUT naming the last stage).
 *
 * A user-mode NIC's forward accepts a connection at once even while the guest
 * cannot answer yet (no address, sshd not listening): such a connection only
 * reaches sshd on a SYN retransmit, seconds later. Closing such an attempt
 * does not take it back: QEMU keeps connecting it to the guest, and every one
 * of them reaches sshd once the guest has its address (a storm of pre-auth
 * sshd processes past MaxStartups was seen when attempts were replaced every
 * 0.5 s during a slow lab boot). An attempt that has seen no SSH banner after
 * 2 s therefore stays and gets a fresh attempt beside it, up to 6 in flight
 * (QEMU retransmits a SYN 6 s and 18 s after the first one, measured: with 3
 * attempts 3 s apart nothing reached the guest between 12 s and 18 s, where a
 * tuned guest's sshd starts; 6 attempts 2 s apart leave no gap over 2 s in the
 * first 28 s, and 6 pre-auth sshd processes at once stay under MaxStartups);
 * the first attempt to get a banner makes the others go and nothing is hedged
 * beside it (a second handshake would only compete with it for the guest's
 * CPU); should it fail, the next attempt follows after intervalMs. When the
 * guest says its sshd is ready (`readyHint`), one attempt is made at once: it
 * reaches a listening sshd directly instead of waiting for a SYN retransmit.
 */
export async function waitForSsh(target: GuestTarget, opts: WaitForSshOptions = {}): Promise<GuestConnection> {
  const start = Date.now();
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const deadline = start + timeoutMs;
  const intervalMs = opts.intervalMs ?? 500;
  const hedgeMs = opts.hedgeMs ?? HEDGE_MS;
  const where = `${target.user}@${target.host}:${target.port}`;
  let last: VmctlError | undefined;
  let lastStage: SshStage | undefined;
  let attempts = 0;
  let winner: GuestConnection | undefined;
  let fatal: unknown;
  interface InFlight {
    readonly ac: AbortController;
    banner: boolean;
  }
  const inFlight = new Set<InFlight>();
  let wake: (() => void) | undefined;
  const kick = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const stopAll = (): void => {
    for (const a of inFlight) a.ac.abort(new Error('not waiting for this attempt any more'));
  };
  const onAbort = (): void => kick();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  // the guest's "sshd ready": one attempt at once (hinted → launched once)
  const hint: { state: 'none' | 'hinted' | 'launched' } = { state: 'none' };
  opts.readyHint?.then(
    (ready) => {
      if (ready && hint.state === 'none') {
        hint.state = 'hinted';
        kick();
      }
    },
    () => {},
  );

  // next launch not before retryAt (intervalMs after the last failure) and, beside an attempt
  // still in flight, not before lastLaunchAt + HEDGE_MS
  let retryAt = start;
  let lastLaunchAt = start;
  const launch = (): void => {
    const attempt = ++attempts;
    lastLaunchAt = Date.now();
    const a: InFlight = { ac: new AbortController(), banner: false };
    inFlight.add(a);
    connectGuest({
      ...target,
      onBanner: () => {
        if (a.ac.signal.aborted) return;
        a.banner = true;
        // the first to get through (nothing is launched beside an attempt with a banner): the others
        // (pending SYNs that reach sshd at the same moment once the guest has its address, each a
        // pre-auth sshd and a key exchange) would only compete with it
        for (const o of inFlight) if (o !== a) o.ac.abort(new Error('another attempt got through'));
      },
      timeoutMs: Math.max(1000, Math.min(opts.attemptTimeoutMs ?? target.timeoutMs ?? DEFAULT_TIMEOUT_MS, deadline - Date.now())),
      signal: a.ac.signal,
    })
      .then(
        (conn) => {
          if (winner || fatal !== undefined || opts.signal?.aborted) {
            conn.close();
            return;
          }
          winner = conn;
          opts.onAttempt?.({ attempt, stage: 'ready', elapsedMs: Date.now() - start });
        },
        (err: unknown) => {
          if (a.ac.signal.aborted) return; // stopped by us
          const stage = sshStageOf(err);
          if (!stage || !(err instanceof VmctlError)) {
            fatal ??= err; // bad input
            return;
          }
          last = err;
          lastStage = stage;
          opts.onAttempt?.({ attempt, stage, elapsedMs: Date.now() - start, error: err });
          if (stage === 'host-key' || (opts.retry && !opts.retry(stage))) fatal ??= err;
        },
      )
      .finally(() => {
        inFlight.delete(a);
        retryAt = Date.now() + intervalMs;
        kick();
      });
  };

  try {
    for (;;) {
      if (winner) return winner;
      if (fatal !== undefined) throw fatal;
      if (opts.signal?.aborted) throw abortedError(`waiting for ssh on ${where}`, opts.signal);
      const now = Date.now();
      if (now >= deadline) {
        throw new VmctlError('TIMEOUT', `ssh on ${where} not ready after ${Math.round(timeoutMs / 1000)} s (last: ${lastStage ? STAGE_TEXT[lastStage] : 'no attempt'})`, {
          hint: 'is the guest booting? look at its serial console',
          ...(last ? { cause: last } : {}),
          details: { sshStage: lastStage, attempts },
        });
      }
      let nextAt: number;
      if (hint.state === 'hinted') {
        hint.state = 'launched';
        // unless one already got through (then it is the one the guest is answering); also beside
        // MAX_IN_FLIGHT silent ones (one more pre-auth sshd, still under MaxStartups)
        if ([...inFlight].every((a) => !a.banner)) {
          launch();
          continue;
        }
      }
      if (inFlight.size === 0) {
        if (now >= retryAt) {
          launch();
          continue;
        }
        nextAt = retryAt;
      } else {
        const hedgeable = inFlight.size < MAX_IN_FLIGHT && [...inFlight].every((a) => !a.banner);
        const hedgeAt = Math.max(lastLaunchAt + hedgeMs, retryAt);
        if (hedgeable && now >= hedgeAt) {
          launch();
          continue;
        }
        // (a banner arriving does not wake us: it only ever cancels a hedge)
        nextAt = hedgeable ? hedgeAt : deadline;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => kick(), Math.max(0, Math.min(nextAt, deadline) - Date.now()));
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    stopAll();
  }
}

/**
 * A guest that should be up (`vmctl ssh`, lab checks): one connection, its failure the answer at
 * once (nothing listening, a refused login, a host key mismatch), like OpenSSH's — except an
 * attempt that QEMU's user-mode forward accepted but that saw no SSH banner: its SYN to the
 * guest may only be retransmitted seconds later (after a migration, or with the guest's CPU
 * starved), so it gets fresh attempts beside it as in waitForSsh, until `timeoutMs`.
 */
export function connectRunningGuest(target: GuestTarget, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<GuestConnection> {
  return waitForSsh(target, {
    ...(opts.signal ? { signal: opts.signal } : {}),
    timeoutMs: opts.timeoutMs ?? 60_000,
    attemptTimeoutMs: 30_000,
    retry: (stage) => stage === 'no-banner',
  });
}
