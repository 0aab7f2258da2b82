/**
 * The contract between the generated procedure stubs (src/libvirt/generated)
 * and the hand-written RPC client (src/libvirt/rpc/client.ts).
 *
 * Generated code only ever sees this interface, so the transport and the
 * message router can change without regenerating anything.
 */
import type { Decoder, Encoder } from '../xdr/index.js';
import type { Duplex } from 'node:stream';

/** Static description of one remote procedure, emitted by the generator. */
export interface ProcedureSpec<A, R> {
  /** e.g. 'REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME' */
  readonly name: string;
  readonly program: number;
  readonly version: number;
  readonly procedure: number;
  /** null when the procedure takes no arguments (void) */
  readonly encodeArgs: Encoder<A> | null;
  /** null when the procedure returns nothing (void) */
  readonly decodeRet: Decoder<R> | null;
  /** '@priority: high' procedures may be answered while the daemon is busy */
  readonly priority?: boolean;
  /** set for @readstream / @writestream procedures (and console/channel: 'both') */
  readonly stream?: 'read' | 'write' | 'both';
}

export interface CallOptions {
  /** abort the wait for the reply (the call itself cannot be cancelled on the server) */
  readonly signal?: AbortSignal;
  /** reject with a timeout error after this many ms (default: none) */
  readonly timeoutMs?: number;
}

/**
 * A libvirt data stream bound to one call serial. Readable side: data sent by
 * the daemon (download, console output). Writable side: data sent to the
 * daemon (upload, console input). end() on the writable side sends the
 * stream's completion (status OK) and waits for the daemon to confirm it;
 * abort() tears the stream down on both sides.
 */
export interface RpcStream extends Duplex {
  readonly serial: number;
  /** Resolves when the daemon confirmed the whole transfer; rejects with its error. */
  readonly done: Promise<void>;
  abort(reason?: Error): void;
  /** Data and hole lengths as they arrive, holes not expanded (instead of the Readable side; see stream.ts). */
  sparse(): AsyncGenerator<Buffer | bigint, void, undefined>;
}

export interface RpcCaller {
  call<A, R>(spec: ProcedureSpec<A, R>, args: A, opts?: CallOptions): Promise<R>;
  /** Make a stream call: the reply to the call arrives first, then stream packets. */
  callStream<A, R>(spec: ProcedureSpec<A, R>, args: A, opts?: CallOptions): Promise<{ ret: R; stream: RpcStream }>;
}
