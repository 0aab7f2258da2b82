/**
 * Errors raised while parsing a connection URI or opening a transport.
 *
 * `message` is one line saying what failed, naming the socket, host or file
 * involved; `hint` is the fix. The CLI prints them together on one line
 * (VmctlError.oneLine: "message (hint)"), so the message does not repeat the
 * hint. `code` is machine-readable; errors about ssh host keys are
 * HostKeyError instances (name 'HostKeyError').
 */

export type TransportErrorCode =
  /** the URI could not be parsed or uses an unsupported feature */
  | 'INVALID_URI'
  /** no daemon socket / nothing listening / host unreachable */
  | 'CONNECT_FAILED'
  /** permission denied on a local socket */
  | 'PERMISSION_DENIED'
  /** connect timeout elapsed */
  | 'TIMEOUT'
  /** opts.signal aborted the connect */
  | 'ABORTED'
  /** TLS credentials missing or unreadable */
  | 'TLS_CREDENTIALS'
  /** server certificate rejected, or server rejected our certificate */
  | 'TLS_VERIFY'
  /** ssh host key unknown (and not accepted) */
  | 'SSH_HOSTKEY_UNKNOWN'
  /** ssh host key differs from the known one, or is revoked */
  | 'SSH_HOSTKEY_MISMATCH'
  /** ssh authentication failed or no usable credentials */
  | 'SSH_AUTH'
  /** ssh connected but the libvirt socket could not be opened remotely */
  | 'SSH_CHANNEL'
  /** anything else */
  | 'TRANSPORT';

export class TransportError extends Error {
  override readonly name: string = 'TransportError';
  readonly code: TransportErrorCode;
  readonly hint: string | undefined;

  constructor(code: TransportErrorCode, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.code = code;
    this.hint = opts.hint;
  }
}

/** The ssh host key is unknown, changed or revoked (codes SSH_HOSTKEY_*). */
export class HostKeyError extends TransportError {
  override readonly name = 'HostKeyError';
}

/** A connection URI that libvirt would reject (or that vmctl cannot serve). */
export class InvalidUriError extends TransportError {
  override readonly name = 'InvalidUriError';
  constructor(message: string, hint?: string) {
    super('INVALID_URI', message, hint !== undefined ? { hint } : {});
  }
}

export function abortError(what: string, signal: AbortSignal): TransportError {
  const reason: unknown = signal.reason;
  const detail = reason instanceof Error ? `: ${reason.message}` : '';
  return new TransportError('ABORTED', `${what} aborted${detail}`, { cause: reason });
}

/** errno-style code of a Node system error, if any */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const c = (err as { code?: unknown }).code;
    if (typeof c === 'string') return c;
  }
  return undefined;
}

/**
 * An error's message, made fit for a one-line message: OpenSSL's
 * "80...:error:0A00045C:SSL routines:fn:reason:file:line:..." becomes the
 * reason, and only the first line is kept.
 */
export function errMessage(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  const ssl = /SSL routines:[^:]*:([^:\n]+)/.exec(msg);
  if (ssl) return ssl[1]!.trim();
  return (msg.split('\n')[0] ?? '').trim();
}
