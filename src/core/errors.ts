/**
 * The one error type of vmctl. Core code throws VmctlError (or lets a
 * LibvirtError through, which toVmctlError() maps); the CLI maps codes to exit
 * statuses in exactly one place (src/cli/exit.ts).
 */
import { LibvirtError } from '../libvirt/errors.js';
import { DAEMON_CLOSED } from '../libvirt/rpc/client.js';
import { TransportError, type TransportErrorCode } from '../libvirt/transport/errors.js';
import { VirErrorNumber } from '../libvirt/generated/constants.gen.js';

export const ERROR_CODES = [
  'USAGE', // bad flags or arguments
  'INVALID_INPUT', // a value that fails validation (name, path, size...)
  'INVALID_TEMPLATE', // a template that fails the schema
  'NOT_FOUND', // domain, image, pool, volume... does not exist
  'ALREADY_EXISTS', // name taken
  'CONFLICT', // state does not allow the operation (running, in use...)
  'CONNECTION', // cannot reach libvirtd / host, connection lost
  'AUTH', // authentication refused or unsupported
  'HOST_KEY', // ssh host key unknown or mismatched
  'TIMEOUT', // waited too long
  'RESOURCE', // out of disk, memory...
  'UNSUPPORTED', // host or daemon cannot do it
  'LIBVIRT', // any other error reported by libvirt
  'ABORTED', // interrupted (Ctrl-C, SIGTERM): what the command made was undone
  'INTERNAL', // a bug in vmctl
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface VmctlErrorOptions {
  /** what the user should do about it; shown after the message */
  readonly hint?: string;
  readonly cause?: unknown;
  /** extra machine-readable details for --json output */
  readonly details?: Record<string, unknown>;
}

export class VmctlError extends Error {
  override readonly name = 'VmctlError';
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    readonly code: ErrorCode,
    message: string,
    opts: VmctlErrorOptions = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.hint = opts.hint;
    this.details = opts.details;
  }

  /** One line for humans: message, then the fix. */
  oneLine(): string {
    return this.hint ? `${this.message} (${this.hint})` : this.message;
  }
}

/** Map anything thrown to a VmctlError, keeping the original as cause. */
export function toVmctlError(err: unknown): VmctlError {
  if (err instanceof VmctlError) return err;
  if (err instanceof LibvirtError) return fromLibvirtError(err);
  if (err instanceof TransportError) {
    return new VmctlError(TRANSPORT_CODES[err.code], err.message, { hint: err.hint, cause: err, details: { transportCode: err.code } });
  }
  if (err instanceof Error) {
    const e = err as NodeJS.ErrnoException & { hint?: unknown; code?: unknown };
    const hint = typeof e.hint === 'string' ? e.hint : undefined;
    switch (e.code) {
      case 'ENOSPC':
        return new VmctlError('RESOURCE', e.message, { hint: hint ?? 'free some disk space and retry', cause: err });
      case 'ENOENT':
        return new VmctlError('NOT_FOUND', e.message, { hint, cause: err });
      case 'EACCES':
      case 'EPERM':
        return new VmctlError('AUTH', e.message, { hint: hint ?? 'run as root or fix the permissions', cause: err });
      case 'ECONNREFUSED':
      case 'ECONNRESET':
      case 'EHOSTUNREACH':
      case 'ENETUNREACH':
      case 'ETIMEDOUT':
        return new VmctlError('CONNECTION', e.message, { hint, cause: err });
      default:
        break;
    }
    return new VmctlError('INTERNAL', err.message, { hint, cause: err });
  }
  return new VmctlError('INTERNAL', String(err));
}

const TRANSPORT_CODES: Record<TransportErrorCode, ErrorCode> = {
  INVALID_URI: 'USAGE',
  CONNECT_FAILED: 'CONNECTION',
  PERMISSION_DENIED: 'AUTH',
  TIMEOUT: 'TIMEOUT',
  ABORTED: 'ABORTED',
  TLS_CREDENTIALS: 'AUTH',
  TLS_VERIFY: 'AUTH',
  SSH_HOSTKEY_UNKNOWN: 'HOST_KEY',
  SSH_HOSTKEY_MISMATCH: 'HOST_KEY',
  SSH_AUTH: 'AUTH',
  SSH_CHANNEL: 'CONNECTION',
  TRANSPORT: 'CONNECTION',
};

/** fixes for libvirt errors users commonly meet, by virErrorNumber */
const LIBVIRT_HINTS: Partial<Record<number, string>> = {
  [VirErrorNumber.VIR_ERR_NO_NETWORK]: 'list networks with virsh net-list --all, or use --network user',
  [VirErrorNumber.VIR_ERR_NO_STORAGE_POOL]: 'list pools with virsh pool-list --all',
  [VirErrorNumber.VIR_ERR_NO_DOMAIN]: 'see vmctl list --all',
  [VirErrorNumber.VIR_ERR_NO_STORAGE_VOL]: 'see vmctl image list, or virsh vol-list vmctl',
};

function fromLibvirtError(err: LibvirtError): VmctlError {
  const hint = LIBVIRT_HINTS[err.code];
  const opts = { cause: err, details: { libvirtCode: err.code, libvirtDomain: err.domain }, ...(hint ? { hint } : {}) };
  if (err.kind === 'transport') {
    const closed = err.message.endsWith(DAEMON_CLOSED) ? { hint: 'libvirtd stopped or restarted under the command: check it runs (virsh version), then run the command again' } : {};
    return new VmctlError('CONNECTION', err.message, { ...opts, ...closed });
  }
  if (err.kind === 'auth') return new VmctlError('AUTH', err.message, opts);
  if (err.kind === 'timeout') return new VmctlError('TIMEOUT', err.message, opts);
  if (err.isNotFound()) return new VmctlError('NOT_FOUND', err.message, opts);
  if (/no space left on device|not enough space|disk quota exceeded/i.test(err.message)) {
    return new VmctlError('RESOURCE', err.message, { ...opts, hint: 'the storage pool is full: free space, or remove unused VMs and images (vmctl delete, vmctl image rm)' });
  }
  if (err.isAlreadyExists()) return new VmctlError('ALREADY_EXISTS', err.message, opts);
  if (err.isConnectionLost()) return new VmctlError('CONNECTION', err.message, opts);
  if (err.isOperationInvalid()) return new VmctlError('CONFLICT', err.message, opts);
  return new VmctlError('LIBVIRT', err.message, opts);
}
