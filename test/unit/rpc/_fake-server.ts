/**
 * In-process fake libvirt daemon over a real unix socket, for the error paths a
 * real daemon cannot be made to produce. It speaks raw packets: tests decide
 * exactly what goes on the wire.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XdrWriter } from '../../../src/libvirt/xdr/index.js';
import type { Encoder } from '../../../src/libvirt/xdr/index.js';
import { FrameDecoder, parsePacket } from '../../../src/libvirt/rpc/framing.js';
import type { Packet } from '../../../src/libvirt/rpc/framing.js';
import { RpcClient } from '../../../src/libvirt/rpc/client.js';
import type { RpcClientOptions } from '../../../src/libvirt/rpc/client.js';
import {
  KEEPALIVE_PROGRAM,
  VirNetMessageStatus,
  VirNetMessageType,
  encodeVirNetMessageError,
  encodeVirNetMessageHeader,
} from '../../../src/libvirt/rpc/protocol.js';
import type { VirNetMessageError, VirNetMessageHeader } from '../../../src/libvirt/rpc/protocol.js';

export function frame(header: VirNetMessageHeader, body: Uint8Array | ((w: XdrWriter) => void) = Buffer.alloc(0)): Buffer {
  const w = new XdrWriter();
  w.writeUint(0);
  encodeVirNetMessageHeader(w, header);
  if (typeof body === 'function') body(w);
  else w.writeRaw(body);
  w.patchUint(0, w.length);
  return Buffer.from(w.finish());
}

export function xdrBody<T>(enc: Encoder<T>, v: T): Buffer {
  const w = new XdrWriter();
  enc(w, v);
  return Buffer.from(w.finish());
}

export function remoteError(partial: Partial<VirNetMessageError> = {}): VirNetMessageError {
  return {
    code: 42,
    domain: 10,
    message: "Domain not found: no domain with matching name 'nope'",
    level: 2,
    dom: null,
    str1: 'Domain not found: %s',
    str2: "no domain with matching name 'nope'",
    str3: null,
    int1: -1,
    int2: -1,
    net: null,
    ...partial,
  };
}

/** Async FIFO of packets received from the client. */
class PacketQueue {
  private items: Packet[] = [];
  private waiters: Array<{ resolve: (p: Packet) => void; reject: (e: Error) => void }> = [];
  private ended: Error | null = null;

  push(p: Packet): void {
    const w = this.waiters.shift();
    if (w) w.resolve(p);
    else this.items.push(p);
  }

  end(e: Error): void {
    this.ended = e;
    for (const w of this.waiters.splice(0)) w.reject(e);
  }

  next(): Promise<Packet> {
    const p = this.items.shift();
    if (p) return Promise.resolve(p);
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  get length(): number {
    return this.items.length;
  }
}

export class FakeConn {
  readonly received = new PacketQueue();
  /** every packet received, in order (including keepalive) */
  readonly log: Packet[] = [];
  readonly closed: Promise<void>;
  /** answer keepalive PINGs from the client automatically */
  autoPong = true;
  /** keep keepalive packets out of `received` */
  hideKeepalive = true;

  constructor(readonly socket: Socket) {
    const frames = new FrameDecoder();
    socket.on('data', (chunk: Buffer) => {
      for (const raw of frames.push(chunk)) {
        const p = parsePacket(Buffer.from(raw));
        this.log.push(p);
        if (p.header.prog === KEEPALIVE_PROGRAM) {
          if (this.autoPong && p.header.proc === 1) this.send({ ...p.header, proc: 2 });
          if (this.hideKeepalive) continue;
        }
        this.received.push(p);
      }
    });
    this.closed = new Promise((resolve) => socket.on('close', () => resolve()));
    socket.on('close', () => this.received.end(new Error('fake server: client connection closed')));
    socket.on('error', () => undefined);
  }

  next(): Promise<Packet> {
    return this.received.next();
  }

  /** Receive n packets. */
  async take(n: number): Promise<Packet[]> {
    const out: Packet[] = [];
    for (let i = 0; i < n; i++) out.push(await this.next());
    return out;
  }

  send(header: VirNetMessageHeader, body?: Uint8Array | ((w: XdrWriter) => void)): boolean {
    return this.socket.write(frame(header, body));
  }

  sendRaw(b: Uint8Array): boolean {
    return this.socket.write(b);
  }

  reply(call: Packet, body?: Uint8Array | ((w: XdrWriter) => void)): boolean {
    return this.send({ ...call.header, type: VirNetMessageType.VIR_NET_REPLY, status: VirNetMessageStatus.VIR_NET_OK }, body);
  }

  replyError(call: Packet, err: VirNetMessageError = remoteError()): boolean {
    return this.send(
      { ...call.header, type: VirNetMessageType.VIR_NET_REPLY, status: VirNetMessageStatus.VIR_NET_ERROR },
      (w) => encodeVirNetMessageError(w, err),
    );
  }

  /** A STREAM packet for the stream opened by `call`. */
  stream(call: Packet, status: VirNetMessageStatus, body?: Uint8Array | ((w: XdrWriter) => void)): boolean {
    return this.send({ ...call.header, type: VirNetMessageType.VIR_NET_STREAM, status }, body);
  }

  /** Resolve once the socket is writable again. */
  drain(): Promise<void> {
    if (!this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => this.socket.once('drain', () => resolve()));
  }
}

export class FakeServer {
  private readonly server: Server;
  private readonly dir: string;
  readonly path: string;
  private readonly accepted: FakeConn[] = [];
  private readonly all: FakeConn[] = [];
  private acceptWaiters: Array<(c: FakeConn) => void> = [];

  private constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'vmctl-rpc-'));
    this.path = join(this.dir, 'fake-libvirt-sock');
    this.server = createServer((s) => {
      const c = new FakeConn(s);
      this.all.push(c);
      const w = this.acceptWaiters.shift();
      if (w) w(c);
      else this.accepted.push(c);
    });
  }

  static async start(): Promise<FakeServer> {
    const fs = new FakeServer();
    await new Promise<void>((resolve, reject) => {
      fs.server.once('error', reject);
      fs.server.listen(fs.path, () => resolve());
    });
    return fs;
  }

  private nextConn(): Promise<FakeConn> {
    const c = this.accepted.shift();
    if (c) return Promise.resolve(c);
    return new Promise((resolve) => this.acceptWaiters.push(resolve));
  }

  /** A connected socket (and the server side of it), without a client. */
  async rawConnect(): Promise<{ socket: Socket; conn: FakeConn }> {
    const socket = connect(this.path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    const conn = await this.nextConn();
    return { socket, conn };
  }

  async connect(opts: RpcClientOptions = {}): Promise<{ client: RpcClient; conn: FakeConn; socket: Socket }> {
    const { socket, conn } = await this.rawConnect();
    const client = new RpcClient(socket, { description: `unix:${this.path}`, ...opts });
    return { client, conn, socket };
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const c of this.all) c.socket.destroy();
    });
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
