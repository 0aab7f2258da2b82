/**
 * The one error type the libvirt layer throws.
 *
 * - kind 'remote':    the daemon answered the call with a virError (code/domain/level/str*)
 * - kind 'transport': the connection failed or was closed (socket error, EOF, keepalive timeout)
 * - kind 'protocol':  the daemon sent something that violates the RPC protocol; the
 *                     connection is closed
 * - kind 'auth':      authentication could not be completed
 * - kind 'timeout':   a per-call timeout (CallOptions.timeoutMs) or abort signal fired
 *
 * Messages contain only the daemon's own error text and vmctl's description of
 * what went wrong; they never include call arguments (which may hold secrets).
 */
import { VirErrorDomain, VirErrorLevel, VirErrorNumber } from './rpc/protocol.js';
import type { VirNetMessageError } from './rpc/protocol.js';

export type LibvirtErrorKind = 'remote' | 'transport' | 'protocol' | 'auth' | 'timeout';

export interface LibvirtErrorInit {
  kind: LibvirtErrorKind;
  /** virErrorNumber */
  code?: number;
  /** virErrorDomain */
  domain?: number;
  /** virErrorLevel */
  level?: number;
  str1?: string;
  str2?: string;
  str3?: string;
  int1?: number;
  int2?: number;
  cause?: unknown;
  /** default: true for 'transport' and 'protocol' errors */
  connectionLost?: boolean;
}

const NOT_FOUND_CODES: ReadonlySet<number> = new Set<number>([
  VirErrorNumber.VIR_ERR_NO_DOMAIN,
  VirErrorNumber.VIR_ERR_NO_NETWORK,
  VirErrorNumber.VIR_ERR_NO_STORAGE_POOL,
  VirErrorNumber.VIR_ERR_NO_STORAGE_VOL,
  VirErrorNumber.VIR_ERR_NO_DOMAIN_SNAPSHOT,
  VirErrorNumber.VIR_ERR_NO_DOMAIN_CHECKPOINT,
  VirErrorNumber.VIR_ERR_NO_SECRET,
  VirErrorNumber.VIR_ERR_NO_NODE_DEVICE,
  VirErrorNumber.VIR_ERR_NO_INTERFACE,
  VirErrorNumber.VIR_ERR_NO_NWFILTER,
  VirErrorNumber.VIR_ERR_NO_NWFILTER_BINDING,
  VirErrorNumber.VIR_ERR_NO_NETWORK_PORT,
  VirErrorNumber.VIR_ERR_NO_DOMAIN_BACKUP,
]);

const EXISTS_CODES: ReadonlySet<number> = new Set<number>([
  VirErrorNumber.VIR_ERR_DOM_EXIST,
  VirErrorNumber.VIR_ERR_NETWORK_EXIST,
  VirErrorNumber.VIR_ERR_STORAGE_VOL_EXIST,
  VirErrorNumber.VIR_ERR_NETWORK_PORT_EXIST,
]);

/**
 * Codes libvirt's drivers use for "an object with that name/UUID is already
 * defined" when there is no dedicated *_EXIST code (domains, networks, pools:
 * VIR_ERR_OPERATION_FAILED "domain 'x' already exists with uuid ..."; rename:
 * VIR_ERR_OPERATION_INVALID; secrets: VIR_ERR_INTERNAL_ERROR).
 */
const EXISTS_BY_MESSAGE_CODES: ReadonlySet<number> = new Set<number>([
  VirErrorNumber.VIR_ERR_OPERATION_FAILED,
  VirErrorNumber.VIR_ERR_OPERATION_INVALID,
  VirErrorNumber.VIR_ERR_INTERNAL_ERROR,
]);
const EXISTS_MESSAGE = /\balready (exists|defined)\b/i;

export class LibvirtError extends Error {
  override readonly name = 'LibvirtError';
  readonly kind: LibvirtErrorKind;
  /** virErrorNumber (VIR_ERR_*); VIR_ERR_RPC / VIR_ERR_OPERATION_TIMEOUT etc. for local errors */
  readonly code: number;
  /** virErrorDomain (VIR_FROM_*) */
  readonly domain: number;
  /** virErrorLevel (VIR_ERR_WARNING / VIR_ERR_ERROR) */
  readonly level: number;
  readonly str1?: string;
  readonly str2?: string;
  readonly str3?: string;
  readonly int1?: number;
  readonly int2?: number;
  readonly #lost: boolean;

  constructor(message: string, init: LibvirtErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.kind = init.kind;
    this.#lost = init.connectionLost ?? (init.kind === 'transport' || init.kind === 'protocol');
    this.code = init.code ?? defaultCode(init.kind);
    this.domain = init.domain ?? VirErrorDomain.VIR_FROM_RPC;
    this.level = init.level ?? VirErrorLevel.VIR_ERR_ERROR;
    if (init.str1 !== undefined) this.str1 = init.str1;
    if (init.str2 !== undefined) this.str2 = init.str2;
    if (init.str3 !== undefined) this.str3 = init.str3;
    if (init.int1 !== undefined) this.int1 = init.int1;
    if (init.int2 !== undefined) this.int2 = init.int2;
  }

  /** Build from the virNetMessageError the daemon sent with status ERROR. */
  static fromRemote(e: VirNetMessageError): LibvirtError {
    const init: LibvirtErrorInit = { kind: 'remote', code: e.code, domain: e.domain, level: e.level };
    if (e.str1 !== null) init.str1 = e.str1;
    if (e.str2 !== null) init.str2 = e.str2;
    if (e.str3 !== null) init.str3 = e.str3;
    // always on the wire; libvirt leaves them at -1 (or 0) when unused
    init.int1 = e.int1;
    init.int2 = e.int2;
    return new LibvirtError(e.message ?? `libvirt error code ${e.code} (no message)`, init);
  }

  static transport(message: string, cause?: unknown): LibvirtError {
    return new LibvirtError(message, { kind: 'transport', cause });
  }

  static protocol(message: string, cause?: unknown): LibvirtError {
    return new LibvirtError(message, { kind: 'protocol', cause });
  }

  /** The named object (domain, network, pool, volume, snapshot, ...) does not exist. */
  isNotFound(): boolean {
    return this.kind === 'remote' && NOT_FOUND_CODES.has(this.code);
  }

  /** An object with the same name or UUID already exists. */
  isAlreadyExists(): boolean {
    if (this.kind !== 'remote') return false;
    if (EXISTS_CODES.has(this.code)) return true;
    return EXISTS_BY_MESSAGE_CODES.has(this.code) && EXISTS_MESSAGE.test(this.message);
  }

  /**
   * The connection to the daemon is gone (closed, reset, keepalive timeout, or
   * torn down after a protocol violation); a new connection is needed.
   */
  isConnectionLost(): boolean {
    return this.#lost;
  }

  /** VIR_ERR_OPERATION_INVALID: e.g. starting a running domain, destroying an inactive one. */
  isOperationInvalid(): boolean {
    return this.kind === 'remote' && this.code === VirErrorNumber.VIR_ERR_OPERATION_INVALID;
  }

  /** A per-call timeout or abort signal ended the wait. */
  isTimeout(): boolean {
    return this.kind === 'timeout';
  }
}

function defaultCode(kind: LibvirtErrorKind): number {
  switch (kind) {
    case 'transport':
      return VirErrorNumber.VIR_ERR_SYSTEM_ERROR;
    case 'protocol':
      return VirErrorNumber.VIR_ERR_RPC;
    case 'auth':
      return VirErrorNumber.VIR_ERR_AUTH_FAILED;
    case 'timeout':
      return VirErrorNumber.VIR_ERR_OPERATION_TIMEOUT;
    case 'remote':
      return VirErrorNumber.VIR_ERR_INTERNAL_ERROR;
  }
}

export function isLibvirtError(e: unknown): e is LibvirtError {
  return e instanceof LibvirtError;
}
