/**
 * The hand-written libvirt RPC client (the counterpart of go-libvirt's rpc.go
 * and libvirt's virnetclient.c): framing, serials, reply matching, error
 * decoding, server-pushed events, data streams and keepalive, over any
 * connected byte stream a transport hands us.
 *
 * Concurrency model: any number of calls may be in flight; replies are
 * matched by serial. Every failure of the connection (EOF, socket error,
 * protocol violation, keepalive timeout, close()) rejects every pending call
 * and fails every open stream with a LibvirtError, and every later call
 * rejects immediately: nothing ever hangs on a dead connection.
 *
 * Back-pressure: stream data is written only as fast as the socket drains.
 * When a read stream's consumer falls behind and the stream buffers more than
 * `streamBufferLimit` unread bytes, the client stops reading the socket until
 * the consumer catches up. Like libvirt's own C client, this means replies to
 * other calls and events on the same connection are delayed meanwhile (they
 * share the socket); use a separate connection for a slow bulk download if
 * that matters. While reading is paused, our keepalive keeps sending PINGs
 * (so the daemon sees us alive) but does not count missing PONGs.
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { XdrError, decode } from '../xdr/index.js';
import type { Decoder } from '../xdr/index.js';
import type { CallOptions, ProcedureSpec, RpcCaller, RpcStream } from './caller.js';
import { LibvirtError } from '../errors.js';
import { FrameDecoder, encodePacket, parsePacket } from './framing.js';
import { RpcStreamImpl } from './stream.js';
import type { StreamHost } from './stream.js';
import {
  KEEPALIVE_PROGRAM,
  KEEPALIVE_PROTOCOL_VERSION,
  KeepaliveProcedure,
  QEMU_EVENTS,
  QEMU_PROGRAM,
  REMOTE_EVENTS,
  REMOTE_PROC_CONNECT_CLOSE_SPEC,
  REMOTE_PROGRAM,
  VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX,
  VirNetMessageStatus,
  VirNetMessageType,
  decodeVirNetMessageError,
  decodeVirNetStreamHole,
} from './protocol.js';
import type { VirNetMessageHeader } from './protocol.js';

/** How server-pushed events of one program are decoded, keyed by procedure number. */
export type EventDecoderTable = ReadonlyMap<number, { readonly name: string; readonly decode: Decoder<unknown> }>;

export interface RpcClientOptions {
  /** endpoint for error messages, e.g. 'unix:/run/libvirt/libvirt-sock' (ConnectedTransport.description) */
  readonly description?: string;
  /** called after the connection is torn down, to release what is under the stream (ConnectedTransport.close) */
  readonly onTransportClose?: () => void;
  /** unread bytes a read stream may buffer before the socket is paused (default 8 MiB) */
  readonly streamBufferLimit?: number;
  /** max payload per outgoing stream packet (default VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX = 262120) */
  readonly streamChunkSize?: number;
  /** event tables per program, used to name events in RpcEventInfo (default: generated REMOTE_EVENTS, QEMU_EVENTS) */
  readonly eventDecoders?: ReadonlyMap<number, EventDecoderTable>;
  /** where exceptions thrown by event/close handlers go (default: logged at warn, or process.emitWarning) */
  readonly onHandlerError?: (err: unknown) => void;
  /** debug/warn diagnostics (never call arguments or payloads) */
  readonly logger?: Pick<Logger, 'debug' | 'warn' | 'trace' | 'isLevelEnabled'>;
}

export interface KeepaliveOptions {
  /** send a PING after this much silence from the daemon (default 5000 ms, libvirt's default) */
  readonly intervalMs?: number;
  /** close the connection after this many unanswered PINGs (default 5, libvirt's default) */
  readonly count?: number;
}

/** A server-pushed VIR_NET_MESSAGE (other than keepalive). */
export interface RpcEventInfo {
  readonly program: number;
  readonly version: number;
  readonly procedure: number;
  /** e.g. 'REMOTE_PROC_DOMAIN_EVENT_CALLBACK_LIFECYCLE' when the program's decoder table knows it */
  readonly name?: string;
  readonly header: VirNetMessageHeader;
  /** raw XDR body (a view: copy it if you keep it) */
  readonly body: Buffer;
}

export type EventHandler<T> = (value: T, info: RpcEventInfo) => void;

interface Pending {
  readonly serial: number;
  readonly prog: number;
  readonly vers: number;
  readonly proc: number;
  readonly name: string;
  readonly decodeRet: Decoder<unknown> | null;
  readonly stream: RpcStreamImpl | null;
  /** performance.now() when the call was sent (for the trace log) */
  readonly t0: number;
  /** timed out / aborted: the reply (if any) is dropped silently */
  abandoned: boolean;
  resolve(v: unknown): void;
  reject(e: Error): void;
  cleanup(): void;
}

interface Subscription {
  readonly handler: EventHandler<unknown>;
  readonly decode: Decoder<unknown> | undefined;
}

const DEFAULT_STREAM_BUFFER_LIMIT = 8 * 1024 * 1024;
const CLOSE_TIMEOUT_MS = 2000;


const hex = (n: number): string => `0x${n.toString(16)}`;

export interface RpcClientEvents {
  /** the connection closed (for whatever reason); emitted once */
  close: [err: LibvirtError];
}

/** The end of the message of a call cut off because the daemon closed the connection (it stopped or restarted). */
export const DAEMON_CLOSED = 'the daemon closed the connection';

export class RpcClient extends EventEmitter<RpcClientEvents> implements RpcCaller {
  readonly description: string;
  private readonly socket: Duplex;
  private readonly frames = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private readonly streams = new Map<number, RpcStreamImpl>();
  private readonly subscriptions = new Map<string, Set<Subscription>>();
  private readonly messageListeners = new Set<(info: RpcEventInfo) => void>();
  private readonly closeListeners = new Set<(err: LibvirtError) => void>();
  private readonly eventDecoders: ReadonlyMap<number, EventDecoderTable>;
  private readonly streamBufferLimit: number;
  private readonly streamChunkSize: number;
  private readonly onTransportClose: (() => void) | undefined;
  private readonly onHandlerError: (err: unknown) => void;
  private readonly log: Pick<Logger, 'debug' | 'warn' | 'trace' | 'isLevelEnabled'> | undefined;

  private serial = 0;
  private closedError: LibvirtError | null = null;
  private closing = false;
  private readonly closedPromise: Promise<LibvirtError>;
  private resolveClosed!: (e: LibvirtError) => void;

  /** streams whose unread buffer is over the limit: the socket is paused while non-empty */
  private readonly pausedBy = new Set<RpcStreamImpl>();
  private drainWaiter: { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } | null = null;

  private keepalive: {
    intervalMs: number;
    count: number;
    countToDeath: number;
    timer: NodeJS.Timeout;
  } | null = null;
  private lastReceived = Date.now();

  private readonly streamHost: StreamHost;

  constructor(socket: Duplex, opts: RpcClientOptions = {}) {
    super();
    this.socket = socket;
    this.log = opts.logger;
    this.description = opts.description ?? 'libvirt daemon';
    this.onTransportClose = opts.onTransportClose;
    this.streamBufferLimit = opts.streamBufferLimit ?? DEFAULT_STREAM_BUFFER_LIMIT;
    this.streamChunkSize = Math.max(
      1,
      Math.min(opts.streamChunkSize ?? VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX, VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX),
    );
    this.eventDecoders =
      opts.eventDecoders ??
      new Map<number, EventDecoderTable>([
        [REMOTE_PROGRAM, REMOTE_EVENTS],
        [QEMU_PROGRAM, QEMU_EVENTS],
      ]);
    this.onHandlerError =
      opts.onHandlerError ??
      ((err) => {
        if (this.log) this.log.warn({ err }, 'libvirt event handler threw');
        else process.emitWarning(`libvirt event handler threw: ${errMessage(err)}`);
      });
    this.closedPromise = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });

    this.streamHost = {
      chunkSize: this.streamChunkSize,
      sendStreamPacket: (st, status, payload) => this.sendStreamPacket(st, status, payload),
      waitDrain: () => this.waitDrain(),
      streamBufferChanged: (st) => this.streamBufferChanged(st),
      releaseStream: (st) => this.releaseStream(st),
    };

    if (socket.destroyed || !socket.readable || !socket.writable) {
      this.fail(LibvirtError.transport(`connection to ${this.description} is not open`));
      return;
    }
    socket.on('data', this.onSocketData);
    socket.on('end', this.onSocketEnd);
    socket.on('error', this.onSocketError);
    socket.on('close', this.onSocketClose);
    socket.on('drain', this.onSocketDrain);
  }

  /** Build a client over a transport; closing the client closes the transport. */
  static fromTransport(
    t: { readonly stream: Duplex; readonly description: string; close(): void },
    opts: Omit<RpcClientOptions, 'description' | 'onTransportClose'> = {},
  ): RpcClient {
    return new RpcClient(t.stream, { ...opts, description: t.description, onTransportClose: () => t.close() });
  }

  // ------------------------------------------------------------------ state

  /** True once the connection is unusable (closed, failed, or being closed). */
  get isClosed(): boolean {
    return this.closedError !== null;
  }

  /** Why the connection closed, once it has. */
  get closeReason(): LibvirtError | null {
    return this.closedError;
  }

  /** Resolves (never rejects) with the reason once the connection is closed. */
  get closed(): Promise<LibvirtError> {
    return this.closedPromise;
  }

  /** Number of calls waiting for a reply (diagnostics/tests). */
  get pendingCalls(): number {
    let n = 0;
    for (const p of this.pending.values()) if (!p.abandoned) n++;
    return n;
  }

  /** Whether reading the socket is paused for stream back-pressure (diagnostics/tests). */
  get readPaused(): boolean {
    return this.pausedBy.size > 0;
  }

  onClose(handler: (err: LibvirtError) => void): () => void {
    if (this.closedError) {
      const err = this.closedError;
      queueMicrotask(() => handler(err));
      return () => undefined;
    }
    this.closeListeners.add(handler);
    return () => this.closeListeners.delete(handler);
  }

  // ------------------------------------------------------------------ calls

  call<A, R>(spec: ProcedureSpec<A, R>, args: A, opts?: CallOptions): Promise<R> {
    return this.startCall(spec, args, opts, null) as Promise<R>;
  }

  /**
   * A call that opens a data stream (e.g. REMOTE_PROC_STORAGE_VOL_DOWNLOAD,
   * DOMAIN_OPEN_CONSOLE). The stream is bound to the call's serial before the
   * call is sent, so no stream packet can be missed; it is handed out with the
   * reply. Timeouts/abort signals in `opts` apply to the reply only.
   */
  async callStream<A, R>(
    spec: ProcedureSpec<A, R>,
    args: A,
    opts?: CallOptions,
  ): Promise<{ ret: R; stream: RpcStream }> {
    let stream: RpcStreamImpl | null = null;
    const ret = (await this.startCall(spec, args, opts, (serial) => {
      stream = new RpcStreamImpl(
        this.streamHost,
        serial,
        spec,
        spec.stream ?? 'both',
        Math.min(1024 * 1024, this.streamBufferLimit),
      );
      return stream;
    })) as R;
    return { ret, stream: stream! };
  }

  private startCall<A, R>(
    spec: ProcedureSpec<A, R>,
    args: A,
    opts: CallOptions | undefined,
    makeStream: ((serial: number) => RpcStreamImpl) | null,
  ): Promise<unknown> {
    // (A and R are only needed to tie args to spec.encodeArgs)
    if (this.closedError) return Promise.reject(this.closedError);
    if (opts?.signal?.aborted) return Promise.reject(this.abortedError(spec.name, opts.signal));

    const serial = this.nextSerial();
    const header: VirNetMessageHeader = {
      prog: spec.program,
      vers: spec.version,
      proc: spec.procedure,
      type: VirNetMessageType.VIR_NET_CALL,
      serial,
      status: VirNetMessageStatus.VIR_NET_OK,
    };
    let packet: Buffer;
    try {
      packet = encodePacket(header, spec.encodeArgs ? { enc: spec.encodeArgs, value: args } : undefined);
    } catch (e) {
      if (e instanceof LibvirtError) return Promise.reject(e);
      return Promise.reject(
        new LibvirtError(`cannot encode the arguments of ${spec.name}: ${errMessage(e)}`, {
          kind: 'protocol',
          connectionLost: false,
          cause: e,
        }),
      );
    }

    return new Promise<unknown>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const signal = opts?.signal;
      const onAbort = (): void => abandon(this.abortedError(spec.name, signal!));
      const entry: Pending = {
        serial,
        prog: spec.program,
        vers: spec.version,
        proc: spec.procedure,
        name: spec.name,
        decodeRet: spec.decodeRet as Decoder<unknown> | null,
        stream: makeStream ? makeStream(serial) : null,
        t0: performance.now(),
        abandoned: false,
        resolve,
        reject,
        cleanup: () => {
          if (timer) clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
        },
      };
      const abandon = (err: LibvirtError): void => {
        if (entry.abandoned || this.pending.get(serial) !== entry) return;
        entry.abandoned = true; // stays in `pending` so the late reply is recognised and dropped
        entry.cleanup();
        reject(err);
      };
      if (opts?.timeoutMs !== undefined) {
        timer = setTimeout(
          () =>
            abandon(
              new LibvirtError(`${spec.name} timed out after ${opts.timeoutMs} ms waiting for ${this.description}`, {
                kind: 'timeout',
              }),
            ),
          opts.timeoutMs,
        );
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(serial, entry);
      if (entry.stream) this.streams.set(serial, entry.stream);
      this.write(packet);
    });
  }

  private abortedError(name: string, signal: AbortSignal): LibvirtError {
    const reason: unknown = signal.reason;
    return new LibvirtError(`${name} aborted${reason instanceof Error ? `: ${reason.message}` : ''}`, {
      kind: 'timeout',
      cause: reason,
    });
  }

  private nextSerial(): number {
    do {
      this.serial = this.serial >= 0xffffffff ? 1 : this.serial + 1;
    } while (this.pending.has(this.serial) || this.streams.has(this.serial));
    return this.serial;
  }

  // ------------------------------------------------------------------ events

  /**
   * Subscribe to server-pushed events (VIR_NET_MESSAGE) of one procedure.
   * Without `decode` the handler gets the raw XDR body (a view into the receive
   * buffer: decode or copy it synchronously); with `decode` (e.g. the
   * generated decodeDomainEventCallbackLifecycleMsg, or REMOTE_EVENTS.get(proc).decode)
   * it gets the decoded value, decoded once per event per decoder. A body that
   * does not decode is a protocol error and closes the connection.
   * Handler exceptions are caught (see RpcClientOptions.onHandlerError).
   * Returns an unsubscribe function. Registering with the daemon (e.g.
   * CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY) is the caller's business.
   */
  onEvent<T = Buffer>(program: number, procedure: number, handler: EventHandler<T>, decode?: Decoder<T>): () => void {
    const key = `${program}:${procedure}`;
    let set = this.subscriptions.get(key);
    if (!set) {
      set = new Set();
      this.subscriptions.set(key, set);
    }
    const sub: Subscription = { handler: handler as EventHandler<unknown>, decode };
    set.add(sub);
    return () => {
      const s = this.subscriptions.get(key);
      if (!s) return;
      s.delete(sub);
      if (s.size === 0) this.subscriptions.delete(key);
    };
  }

  /** Listen to every server-pushed message (except keepalive), raw. Returns an unsubscribe function. */
  onMessage(handler: (info: RpcEventInfo) => void): () => void {
    this.messageListeners.add(handler);
    return () => this.messageListeners.delete(handler);
  }

  // ------------------------------------------------------------------ keepalive

  /**
   * Start sending keepalive PINGs (call only after CONNECT_SUPPORTS_FEATURE
   * reported VIR_DRV_FEATURE_PROGRAM_KEEPALIVE; see startKeepaliveIfSupported
   * in auth.ts). After `intervalMs` without any packet from the daemon a PING
   * is sent; after `count` unanswered PINGs the connection is closed with a
   * transport error. PINGs from the daemon are answered whether or not this
   * was called.
   */
  startKeepalive(opts: KeepaliveOptions = {}): void {
    if (this.closedError) return;
    this.stopKeepalive();
    const intervalMs = opts.intervalMs ?? 5000;
    const count = opts.count ?? 5;
    if (intervalMs <= 0) return;
    this.lastReceived = Date.now();
    const timer = setTimeout(() => this.keepaliveTick(), intervalMs);
    timer.unref();
    this.keepalive = { intervalMs, count, countToDeath: count, timer };
  }

  stopKeepalive(): void {
    if (this.keepalive) clearTimeout(this.keepalive.timer);
    this.keepalive = null;
  }

  private keepaliveTick(): void {
    const ka = this.keepalive;
    if (!ka || this.closedError) return;
    const idle = Date.now() - this.lastReceived;
    if (idle < ka.intervalMs) {
      ka.timer = setTimeout(() => this.keepaliveTick(), ka.intervalMs - idle);
      ka.timer.unref();
      return;
    }
    if (this.pausedBy.size > 0) {
      // we are the ones not reading: keep the daemon convinced we are alive, don't count
      this.sendKeepalive(KeepaliveProcedure.KEEPALIVE_PROC_PING);
    } else if (ka.countToDeath === 0) {
      this.fail(
        LibvirtError.transport(
          `connection to ${this.description} closed: no keepalive response from the daemon ` +
            `after ${ka.count} pings in ${Math.round(idle / 1000)} s`,
        ),
      );
      return;
    } else {
      ka.countToDeath--;
      this.sendKeepalive(KeepaliveProcedure.KEEPALIVE_PROC_PING);
    }
    ka.timer = setTimeout(() => this.keepaliveTick(), ka.intervalMs);
    ka.timer.unref();
  }

  private sendKeepalive(proc: KeepaliveProcedure): void {
    if (this.closedError) return;
    this.write(
      encodePacket({
        prog: KEEPALIVE_PROGRAM,
        vers: KEEPALIVE_PROTOCOL_VERSION,
        proc,
        type: VirNetMessageType.VIR_NET_MESSAGE,
        serial: 0,
        status: VirNetMessageStatus.VIR_NET_OK,
      }),
    );
  }

  // ------------------------------------------------------------------ close

  /**
   * Graceful close: sends REMOTE_PROC_CONNECT_CLOSE (best effort, bounded by
   * `timeoutMs`), then ends the connection. Calls still pending afterwards are
   * rejected. Never throws.
   */
  async close(opts: { timeoutMs?: number } = {}): Promise<void> {
    if (this.closedError || this.closing) {
      await this.closedPromise;
      return;
    }
    this.closing = true;
    try {
      await this.call(REMOTE_PROC_CONNECT_CLOSE_SPEC, undefined, { timeoutMs: opts.timeoutMs ?? CLOSE_TIMEOUT_MS });
    } catch {
      // best effort
    }
    this.fail(LibvirtError.transport(`connection to ${this.description} closed by the client`), true);
  }

  /** Immediate close without telling the daemon. */
  destroy(reason?: Error): void {
    this.fail(
      reason instanceof LibvirtError
        ? reason
        : LibvirtError.transport(
            `connection to ${this.description} closed by the client${reason ? `: ${reason.message}` : ''}`,
            reason,
          ),
      true,
    );
  }

  /**
   * Tear the connection down: reject everything pending, fail every stream,
   * notify listeners. Idempotent; the first reason wins.
   */
  private fail(err: LibvirtError, graceful = false): void {
    if (this.closedError) return;
    this.closedError = err;
    this.stopKeepalive();

    const socket = this.socket;
    socket.off('data', this.onSocketData);
    socket.off('drain', this.onSocketDrain);
    // keep an 'error' listener: a late socket error must not become an uncaught exception
    if (graceful) {
      socket.end();
      const t = setTimeout(() => socket.destroy(), 1000);
      t.unref();
      socket.once('close', () => clearTimeout(t));
    } else {
      socket.destroy();
    }
    this.pausedBy.clear();

    const pending = [...this.pending.values()];
    this.pending.clear();
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const p of pending) {
      p.cleanup();
      if (!p.abandoned) p.reject(err);
      // a stream whose call never got its reply was never handed out
      p.stream?.handleError(err);
    }
    for (const st of streams) st.handleError(err);
    if (this.drainWaiter) {
      this.drainWaiter.reject(err);
      this.drainWaiter = null;
    }

    try {
      this.onTransportClose?.();
    } catch {
      // ignore
    }
    this.log?.debug({ endpoint: this.description, reason: err.message }, 'libvirt connection closed');
    this.resolveClosed(err);
    for (const l of [...this.closeListeners]) {
      try {
        l(err);
      } catch (e) {
        this.onHandlerError(e);
      }
    }
    this.closeListeners.clear();
    try {
      this.emit('close', err);
    } catch (e) {
      this.onHandlerError(e);
    }
  }

  // ------------------------------------------------------------------ socket

  private readonly onSocketData = (chunk: Buffer): void => {
    if (this.closedError) return;
    let packets: Buffer[];
    try {
      packets = this.frames.push(chunk);
    } catch (e) {
      this.fail(this.protocolError(errMessage(e), e));
      return;
    }
    if (packets.length > 0) this.lastReceived = Date.now();
    for (const p of packets) {
      if (this.closedError) return;
      try {
        this.dispatch(p);
      } catch (e) {
        this.fail(e instanceof LibvirtError && e.kind === 'protocol' ? e : this.protocolError(errMessage(e), e));
        return;
      }
    }
  };

  private readonly onSocketEnd = (): void => {
    this.fail(
      this.closing
        ? LibvirtError.transport(`connection to ${this.description} closed by the client`)
        : LibvirtError.transport(`connection to ${this.description} closed: ${DAEMON_CLOSED}`),
    );
  };

  private readonly onSocketError = (e: Error): void => {
    this.fail(LibvirtError.transport(`connection to ${this.description} closed: ${e.message}`, e));
  };

  private readonly onSocketClose = (): void => {
    this.fail(LibvirtError.transport(`connection to ${this.description} closed`));
  };

  private readonly onSocketDrain = (): void => {
    const w = this.drainWaiter;
    this.drainWaiter = null;
    w?.resolve();
  };

  private waitDrain(): Promise<void> {
    if (this.closedError) return Promise.reject(this.closedError);
    if (!this.drainWaiter) {
      let resolve!: () => void;
      let reject!: (e: Error) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => undefined);
      this.drainWaiter = { promise, resolve, reject };
    }
    return this.drainWaiter.promise;
  }

  private protocolError(what: string, cause?: unknown): LibvirtError {
    return LibvirtError.protocol(`protocol error on connection to ${this.description}: ${what}; connection closed`, cause);
  }

  // ------------------------------------------------------------------ dispatch

  private dispatch(packet: Buffer): void {
    let header: VirNetMessageHeader;
    let body: Buffer;
    try {
      ({ header, body } = parsePacket(packet));
    } catch (e) {
      throw this.protocolError(`malformed message header: ${errMessage(e)}`, e);
    }

    if (header.prog === KEEPALIVE_PROGRAM) {
      if (header.type !== VirNetMessageType.VIR_NET_MESSAGE || header.vers !== KEEPALIVE_PROTOCOL_VERSION) {
        throw this.protocolError(`unexpected keepalive message type ${header.type} version ${header.vers}`);
      }
      if (header.proc === KeepaliveProcedure.KEEPALIVE_PROC_PING) {
        this.sendKeepalive(KeepaliveProcedure.KEEPALIVE_PROC_PONG);
      }
      if (this.keepalive) this.keepalive.countToDeath = this.keepalive.count;
      return;
    }
    if (this.keepalive) this.keepalive.countToDeath = this.keepalive.count;

    switch (header.type) {
      case VirNetMessageType.VIR_NET_REPLY:
        this.dispatchReply(header, body);
        return;
      case VirNetMessageType.VIR_NET_MESSAGE:
        this.dispatchEvent(header, body);
        return;
      case VirNetMessageType.VIR_NET_STREAM:
      case VirNetMessageType.VIR_NET_STREAM_HOLE:
        this.dispatchStream(header, body);
        return;
      case VirNetMessageType.VIR_NET_REPLY_WITH_FDS: {
        // only procedures that return file descriptors get these; node cannot
        // receive SCM_RIGHTS, so fail that one call and keep the connection
        const p = this.pending.get(header.serial);
        if (!p || p.prog !== header.prog || p.proc !== header.proc) {
          throw this.protocolError(`reply with file descriptors for unknown serial ${header.serial}`);
        }
        this.pending.delete(header.serial);
        p.cleanup();
        if (p.stream) this.streams.delete(header.serial);
        if (!p.abandoned) {
          p.reject(
            new LibvirtError(`${p.name} returns file descriptors, which vmctl's RPC client cannot receive`, {
              kind: 'protocol',
              connectionLost: false,
            }),
          );
        }
        return;
      }
      default:
        throw this.protocolError(
          `unexpected message type ${header.type} (program ${hex(header.prog)}, procedure ${header.proc}, serial ${header.serial})`,
        );
    }
  }

  private dispatchReply(h: VirNetMessageHeader, body: Buffer): void {
    const p = this.pending.get(h.serial);
    if (!p) {
      throw this.protocolError(`reply for unknown serial ${h.serial} (program ${hex(h.prog)}, procedure ${h.proc})`);
    }
    if (h.prog !== p.prog || h.vers !== p.vers || h.proc !== p.proc) {
      throw this.protocolError(
        `reply for serial ${h.serial} is for program ${hex(h.prog)} v${h.vers} procedure ${h.proc}, ` +
          `but ${p.name} (program ${hex(p.prog)} v${p.vers} procedure ${p.proc}) was called`,
      );
    }

    if (h.status === VirNetMessageStatus.VIR_NET_OK) {
      let value: unknown;
      try {
        value = p.decodeRet ? decode(p.decodeRet, body) : expectEmpty(body);
      } catch (e) {
        throw this.protocolError(`malformed reply to ${p.name}: ${errMessage(e)}`, e); // fail() rejects p too
      }
      this.pending.delete(h.serial);
      p.cleanup();
      if (p.abandoned) {
        this.log?.debug({ serial: h.serial, procedure: p.name }, 'dropping late reply to an abandoned call');
        if (p.stream) {
          // the daemon opened a stream nobody will use: abort it
          this.streams.delete(h.serial);
          p.stream.abort();
        }
        return;
      }
      if (this.log?.isLevelEnabled('trace')) this.log.trace({ procedure: p.name, ms: Math.round(performance.now() - p.t0) }, 'rpc call');
      p.resolve(value);
      return;
    }

    if (h.status === VirNetMessageStatus.VIR_NET_ERROR) {
      const err = this.decodeRemoteError(body, p.name);
      this.pending.delete(h.serial);
      p.cleanup();
      if (this.log?.isLevelEnabled('trace')) this.log.trace({ procedure: p.name, ms: Math.round(performance.now() - p.t0), error: err.message }, 'rpc call');
      if (p.stream) {
        this.streams.delete(h.serial);
        p.stream.handleError(err);
      }
      if (!p.abandoned) p.reject(err);
      return;
    }

    throw this.protocolError(`reply to ${p.name} has invalid status ${h.status}`);
  }

  private decodeRemoteError(body: Buffer, what: string): LibvirtError {
    try {
      return LibvirtError.fromRemote(decode(decodeVirNetMessageError, body));
    } catch (e) {
      throw this.protocolError(`malformed error reply to ${what}: ${errMessage(e)}`, e);
    }
  }

  private dispatchEvent(h: VirNetMessageHeader, body: Buffer): void {
    const table = this.eventDecoders.get(h.prog);
    const known = table?.get(h.proc);
    const info: RpcEventInfo = {
      program: h.prog,
      version: h.vers,
      procedure: h.proc,
      ...(known ? { name: known.name } : {}),
      header: h,
      body,
    };
    for (const l of [...this.messageListeners]) {
      try {
        l(info);
      } catch (e) {
        this.onHandlerError(e);
      }
    }
    const subs = this.subscriptions.get(`${h.prog}:${h.proc}`);
    if (!subs || subs.size === 0) return;
    const decoded = new Map<Decoder<unknown>, unknown>();
    for (const sub of [...subs]) {
      let value: unknown = body;
      if (sub.decode) {
        if (!decoded.has(sub.decode)) decoded.set(sub.decode, this.decodeEvent(sub.decode, body, h));
        value = decoded.get(sub.decode);
      }
      try {
        sub.handler(value, info);
      } catch (e) {
        this.onHandlerError(e);
      }
    }
  }

  private decodeEvent(dec: Decoder<unknown>, body: Buffer, h: VirNetMessageHeader): unknown {
    try {
      return decode(dec, body);
    } catch (e) {
      throw this.protocolError(`malformed event (program ${hex(h.prog)}, procedure ${h.proc}): ${errMessage(e)}`, e);
    }
  }

  private dispatchStream(h: VirNetMessageHeader, body: Buffer): void {
    const st = this.streams.get(h.serial);
    // libvirt ignores packets for streams it no longer knows (e.g. after an abort)
    if (!st) {
      this.log?.debug({ serial: h.serial, proc: h.proc, status: h.status }, 'ignoring packet for a closed stream');
      return;
    }
    const p = this.pending.get(h.serial);
    if (p && (p.prog !== h.prog || p.vers !== h.vers || p.proc !== h.proc)) {
      throw this.protocolError(`stream packet for serial ${h.serial} does not match its call ${p.name}`);
    }
    if (h.type === VirNetMessageType.VIR_NET_STREAM_HOLE) {
      if (h.status !== VirNetMessageStatus.VIR_NET_CONTINUE) {
        throw this.protocolError(`stream hole for serial ${h.serial} has invalid status ${h.status}`);
      }
      let hole;
      try {
        hole = decode(decodeVirNetStreamHole, body);
      } catch (e) {
        throw this.protocolError(`malformed stream hole for serial ${h.serial}: ${errMessage(e)}`, e);
      }
      if (hole.length < 0n) throw this.protocolError(`negative stream hole length for serial ${h.serial}`);
      st.handleHole(hole.length);
      return;
    }
    switch (h.status) {
      case VirNetMessageStatus.VIR_NET_CONTINUE:
        // the payload is a view into the receive chunk; the stream keeps it until read
        st.handleData(body);
        return;
      case VirNetMessageStatus.VIR_NET_OK:
        st.handleFinished();
        return;
      case VirNetMessageStatus.VIR_NET_ERROR:
        st.handleError(this.decodeRemoteError(body, st.procedureName));
        return;
      default:
        throw this.protocolError(`stream packet for serial ${h.serial} has invalid status ${h.status}`);
    }
  }

  // ------------------------------------------------------------------ streams

  /**
   * Every outgoing packet goes through here. Packets written in the same tick
   * (several calls started together, a burst of stream chunks) are corked and
   * leave in one writev when the tick ends: one syscall instead of one each.
   * The return value is the socket's back-pressure signal, as for write().
   */
  private write(packet: Buffer): boolean {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    return this.socket.write(packet);
  }

  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  private sendStreamPacket(st: RpcStreamImpl, status: VirNetMessageStatus, payload?: Buffer): boolean {
    if (this.closedError) throw this.closedError;
    const packet = encodePacket(
      {
        prog: st.program,
        vers: st.version,
        proc: st.procedure,
        type: VirNetMessageType.VIR_NET_STREAM,
        serial: st.serial,
        status,
      },
      { raw: payload ?? EMPTY },
    );
    return this.write(packet);
  }

  private streamBufferChanged(st: RpcStreamImpl): void {
    if (this.closedError) return;
    const buffered = st.bufferedBytes;
    if (!st.isSettled && !st.destroyed && !st.starving && buffered > this.streamBufferLimit) {
      if (!this.pausedBy.has(st)) {
        this.pausedBy.add(st);
        if (this.pausedBy.size === 1) this.socket.pause();
      }
    } else if (this.pausedBy.has(st) && (st.starving || buffered <= this.streamBufferLimit / 2)) {
      this.unpause(st);
    }
  }

  private releaseStream(st: RpcStreamImpl): void {
    if (this.streams.get(st.serial) === st) this.streams.delete(st.serial);
    // a finished stream receives nothing more: holding the socket for it helps nobody
    this.unpause(st);
  }

  private unpause(st: RpcStreamImpl): void {
    if (!this.pausedBy.delete(st)) return;
    if (this.pausedBy.size === 0 && !this.closedError) this.socket.resume();
  }
}

const EMPTY = Buffer.alloc(0);

function expectEmpty(body: Buffer): undefined {
  if (body.length !== 0) throw new XdrError(`${body.length} unexpected bytes in a reply that should be empty`);
  return undefined;
}

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
