/**
 * Errors of guest SSH connections. They carry `details.sshStage` saying how
 * far a connection got:
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
import { VmctlError, type ErrorCode } from '../errors.js';

export type SshStage = 'port-closed' | 'no-banner' | 'handshake' | 'host-key' | 'auth' | 'channel';

/** A VmctlError that records how far the connection got (details.sshStage). */
export function sshError(code: ErrorCode, stage: SshStage, message: string, opts: { hint?: string; cause?: unknown; details?: Record<string, unknown> } = {}): VmctlError {
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

/** The error for a wait ended by `signal` (TIMEOUT when its reason is a TimeoutError). */
export function abortedError(what: string, signal: AbortSignal): VmctlError {
  const reason = signal.reason as unknown;
  const timeout = reason instanceof Error && reason.name === 'TimeoutError';
  return new VmctlError(timeout ? 'TIMEOUT' : 'ABORTED', `${what}: ${timeout ? 'timed out' : 'interrupted'}`, {
    cause: reason,
    details: { aborted: true },
  });
}
