/**
 * A libvirt data stream (virStream over RPC) as a Node Duplex.
 *
 * Wire protocol (virnetclientstream.c / remote_daemon_stream.c):
 *  - data either way: type STREAM, status CONTINUE, raw payload
 *  - daemon -> client end of data: STREAM CONTINUE with an EMPTY payload
 *  - sparse streams: type STREAM_HOLE, status CONTINUE, virNetStreamHole payload
 *  - finish: client sends STREAM status OK (empty); daemon confirms with
 *    STREAM OK (empty), or STREAM ERROR + virNetMessageError
 *  - abort: client sends STREAM status ERROR (empty); daemon's confirmation is ignored
 *  - daemon-side failure: STREAM ERROR + virNetMessageError at any time
 *
 * Readable side: data from the daemon. Holes are expanded into zero bytes (as
 * virStreamRecv does without VIR_STREAM_RECV_STOP_AT_HOLE) lazily, as the
 * consumer reads, and a 'hole' event (length: bigint) is emitted when one arrives.
 * sparse() is the other way to read: data packets and hole lengths as they
 * arrive, nothing expanded or copied (instead of the Readable side, never both).
 * Writable side: data to the daemon, split into packets of at most
 * `chunkSize` bytes, each write waiting for the socket to drain.
 * end() sends the finish and `done` resolves once the daemon confirmed it.
 * For read-only streams ('read' procedures), the finish is sent automatically
 * when the daemon signals end of data.
 *
 * Failure (daemon error, connection loss, abort) rejects `done`. The Duplex is
 * destroyed WITH the error only if somebody listens for 'error' (pipeline,
 * for-await, an explicit listener); otherwise it is destroyed without one, so
 * an unobserved stream can never crash the process with an unhandled 'error'.
 */
import { Duplex } from 'node:stream';
import type { RpcStream } from './caller.js';
import { LibvirtError } from '../errors.js';
import { VirErrorNumber, VirNetMessageStatus } from './protocol.js';

/** What a stream needs from the client that owns it. */
export interface StreamHost {
  /** Send one STREAM packet for this stream; returns false when the socket wants a drain. Throws if closed. */
  sendStreamPacket(stream: RpcStreamImpl, status: VirNetMessageStatus, payload?: Buffer): boolean;
  /** Resolves when the socket drained; rejects when the connection closed. */
  waitDrain(): Promise<void>;
  /** The stream's unread buffer changed size (back-pressure accounting). */
  streamBufferChanged(stream: RpcStreamImpl): void;
  /** The stream is finished/failed: stop routing packets to it. */
  releaseStream(stream: RpcStreamImpl): void;
  readonly chunkSize: number;
}

type State = 'open' | 'finishing' | 'completed' | 'failed';

const HOLE_CHUNK = 1024 * 1024;

export class RpcStreamImpl extends Duplex implements RpcStream {
  readonly done: Promise<void>;
  private resolveDone!: () => void;
  private rejectDone!: (e: Error) => void;
  private state: State = 'open';
  private failure: Error | null = null;

  // incoming data not yet pushed into the Readable (Buffers, or pending hole lengths)
  private rx: Array<Buffer | bigint> = [];
  private rxHead = 0;
  private rxBytes = 0;
  private rxEOF = false;
  private eofPushed = false;
  private wantRead = false;
  private finalCb: ((err?: Error | null) => void) | null = null;
  // sparse(): the consumer reads rx itself; `sparseWaiter` wakes it when rx grows or the stream settles
  private sparseMode = false;
  private sparseWaiter: (() => void) | null = null;

  readonly procedureName: string;
  readonly program: number;
  readonly version: number;
  readonly procedure: number;

  constructor(
    private readonly host: StreamHost,
    readonly serial: number,
    spec: { readonly name: string; readonly program: number; readonly version: number; readonly procedure: number },
    readonly mode: 'read' | 'write' | 'both',
    highWaterMark = 1024 * 1024,
  ) {
    super({ allowHalfOpen: true, readableHighWaterMark: highWaterMark, writableHighWaterMark: highWaterMark });
    this.procedureName = spec.name;
    this.program = spec.program;
    this.version = spec.version;
    this.procedure = spec.procedure;
    this.done = new Promise<void>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // nobody may be awaiting done: never let it become an unhandled rejection
    this.done.catch(() => undefined);
  }

  /** Bytes received from the daemon that the consumer has not read yet. */
  get bufferedBytes(): number {
    return this.rxBytes + this.readableLength;
  }

  get isSettled(): boolean {
    return this.state === 'completed' || this.state === 'failed';
  }

  // ---- called by the client's router ----

  /** STREAM CONTINUE: data, or end of data when empty. */
  handleData(payload: Buffer): void {
    if (this.isSettled || this.rxEOF) return;
    if (payload.length === 0) {
      this.rxEOF = true;
      this.drainRx();
      // a read-only stream is complete once all data arrived: send the finish
      // right away (not from _final, which never runs if the consumer destroys
      // the stream as soon as it read the end, as for-await does)
      if (this.mode === 'read') {
        this.sendFinish();
        if (!this.writableEnded) this.end();
      }
      return;
    }
    this.rx.push(payload);
    this.rxBytes += payload.length;
    this.drainRx();
  }

  /** STREAM_HOLE: a run of zeros of the given length. */
  handleHole(length: bigint): void {
    if (this.isSettled || this.rxEOF) return;
    if (length <= 0n) return;
    this.emit('hole', length);
    this.rx.push(length);
    this.drainRx();
  }

  /** STREAM OK: the daemon confirmed our finish (or, unsolicited, ended the stream). */
  handleFinished(): void {
    if (this.isSettled) return;
    this.state = 'completed';
    this.rxEOF = true;
    this.host.releaseStream(this);
    this.drainRx();
    const cb = this.finalCb;
    this.finalCb = null;
    this.resolveDone();
    if (cb) cb();
  }

  /** STREAM ERROR from the daemon, or the connection failed. */
  handleError(err: Error): void {
    this.fail(err);
  }

  // ---- public ----

  abort(reason?: Error): void {
    if (this.isSettled) return;
    try {
      this.host.sendStreamPacket(this, VirNetMessageStatus.VIR_NET_ERROR);
    } catch {
      // connection already closed: nothing to tell the daemon
    }
    this.fail(
      reason ??
        new LibvirtError(`stream of ${this.procedureName} aborted by the client`, {
          kind: 'timeout',
          code: VirErrorNumber.VIR_ERR_OPERATION_ABORTED,
        }),
    );
  }

  /**
   * The stream's data as it arrives, in order: Buffers (the packets' payloads, not copied) and
   * hole lengths (bigint, never expanded into zeros) — for a sparse download of a large, mostly
   * empty volume, where the Readable side would hand out the holes as zero bytes. Use it instead
   * of the Readable side, never both. Ends at the end of data (await `done` for the daemon's
   * confirmation); throws the stream's failure; leaving the loop early aborts the transfer.
   */
  async *sparse(): AsyncGenerator<Buffer | bigint, void, undefined> {
    this.sparseMode = true;
    try {
      for (;;) {
        if (this.rxHead < this.rx.length) {
          const item = this.rx[this.rxHead]!;
          this.shiftRx();
          if (typeof item !== 'bigint') this.rxBytes -= item.length;
          this.host.streamBufferChanged(this);
          yield item;
          continue;
        }
        if (this.state === 'failed') throw this.failure ?? this.notOpenError();
        if (this.rxEOF) return;
        await new Promise<void>((resolve) => {
          this.sparseWaiter = resolve;
          this.host.streamBufferChanged(this); // starving now: the socket must be read
        });
      }
    } finally {
      if (!this.rxEOF) this.abort();
    }
  }

  private wakeSparse(): void {
    const w = this.sparseWaiter;
    this.sparseWaiter = null;
    if (w) w();
  }

  // ---- Duplex implementation ----

  override _read(): void {
    this.wantRead = true;
    this.drainRx();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.sendData(chunk).then(
      () => cb(),
      (e: unknown) => {
        // if the stream already failed, fail() destroyed it; don't error twice
        if (this.state === 'failed') return;
        cb(e instanceof Error ? e : new Error(String(e)));
      },
    );
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.state === 'completed') return cb();
    if (this.state === 'failed') return; // destroyed already
    this.finalCb = cb;
    this.sendFinish();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // 'finishing': the finish is on its way; the daemon's answer settles `done`
    if (this.state === 'open') {
      // destroyed by the user before the transfer completed: abort it on the daemon
      try {
        this.host.sendStreamPacket(this, VirNetMessageStatus.VIR_NET_ERROR);
      } catch {
        // connection closed
      }
      this.settleFailed(
        err ??
          new LibvirtError(`stream of ${this.procedureName} destroyed before it completed`, {
            kind: 'timeout',
            code: VirErrorNumber.VIR_ERR_OPERATION_ABORTED,
          }),
      );
    }
    cb(err);
  }

  // ---- internals ----

  private async sendData(chunk: Buffer): Promise<void> {
    if (this.mode === 'read') {
      throw new LibvirtError(`stream of ${this.procedureName} is read-only`, {
        kind: 'protocol',
        connectionLost: false,
      });
    }
    const size = this.host.chunkSize;
    for (let off = 0; off < chunk.length; off += size) {
      if (this.state !== 'open') throw this.failure ?? this.notOpenError();
      const piece = chunk.subarray(off, Math.min(off + size, chunk.length));
      if (!this.host.sendStreamPacket(this, VirNetMessageStatus.VIR_NET_CONTINUE, piece)) {
        await this.host.waitDrain();
      }
    }
  }

  private sendFinish(): void {
    if (this.state !== 'open') return;
    this.state = 'finishing';
    try {
      this.host.sendStreamPacket(this, VirNetMessageStatus.VIR_NET_OK);
    } catch (e) {
      this.fail(e instanceof Error ? e : new Error(String(e)));
    }
  }

  private notOpenError(): LibvirtError {
    return new LibvirtError(`stream of ${this.procedureName} is already finished`, {
      kind: 'protocol',
      connectionLost: false,
    });
  }

  private drainRx(): void {
    if (this.sparseMode) {
      this.wakeSparse();
      this.host.streamBufferChanged(this);
      return;
    }
    while (this.wantRead && this.rxHead < this.rx.length) {
      const item = this.rx[this.rxHead]!;
      if (typeof item === 'bigint') {
        const n = item > BigInt(HOLE_CHUNK) ? HOLE_CHUNK : Number(item);
        const rest = item - BigInt(n);
        if (rest > 0n) this.rx[this.rxHead] = rest;
        else this.shiftRx();
        this.wantRead = this.push(Buffer.alloc(n));
      } else {
        this.shiftRx();
        this.rxBytes -= item.length;
        this.wantRead = this.push(item);
      }
    }
    if (this.rxHead >= this.rx.length && this.rxEOF && !this.eofPushed && !this.destroyed) {
      this.eofPushed = true;
      this.push(null);
    }
    this.host.streamBufferChanged(this);
  }

  /**
   * The consumer asked for data (_read) and everything queued was pushed:
   * Node will not call _read again until we push, so the socket must be
   * read again for this stream whatever the buffered byte count says.
   */
  get starving(): boolean {
    return (this.sparseMode ? this.sparseWaiter !== null : this.wantRead) && this.rxHead >= this.rx.length;
  }

  private shiftRx(): void {
    this.rx[this.rxHead] = 0n; // drop the reference
    this.rxHead++;
    if (this.rxHead >= this.rx.length) {
      this.rx = [];
      this.rxHead = 0;
    } else if (this.rxHead > 1024 && this.rxHead * 2 > this.rx.length) {
      this.rx = this.rx.slice(this.rxHead);
      this.rxHead = 0;
    }
  }

  private settleFailed(err: Error): void {
    if (this.isSettled) return;
    this.state = 'failed';
    this.failure = err;
    this.finalCb = null;
    this.rx = [];
    this.rxHead = 0;
    this.rxBytes = 0;
    this.host.releaseStream(this);
    this.rejectDone(err);
    this.wakeSparse();
  }

  private fail(err: Error): void {
    if (this.isSettled) return;
    this.settleFailed(err);
    if (this.listenerCount('error') > 0) this.destroy(err);
    else this.destroy();
  }
}
