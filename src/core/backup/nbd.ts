/**
 * A minimal NBD client (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md) for
 * reading a pull-mode backup's export over a unix socket: fixed-newstyle handshake, NBD_OPT_GO,
 * then pipelined NBD_CMD_READs with simple replies (no structured replies are asked for, so a read
 * reply is its 16-byte header and exactly the bytes asked): the socket reads into one reused 1 MiB
 * buffer (net's `onread`), copied at once into the caller's buffers, so no garbage per packet.
 * Read-only; nothing is ever written.
 * The extents come from `qemu-img map` on the same export (nbdExtents), not from this client.
 */
import { createConnection, type Socket } from 'node:net';
import { VmctlError } from '../errors.js';
import { qemuImg, type MapExtent } from './qemu-img.js';

const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
const OPT_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_GO = 7;
const REP_ACK = 1;
const REP_INFO = 3;
const INFO_EXPORT = 0;
const CMD_READ = 0;
const CMD_DISC = 2;
/** QEMU's server takes requests of up to 32 MiB; larger reads are split */
const MAX_REQUEST = 32 * 1024 * 1024;
/** what one socket read takes at most */
const READ_BUFFER = 1024 * 1024;

interface Pending {
  buf: Buffer;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** What an NBD export is read as: a unix socket and an export name (a disk's target, for libvirt's pull-mode backup). */
export interface NbdExport {
  socket: string;
  name: string;
  /** an incremental's export: the dirty bitmap (since the parent's checkpoint) it exposes, e.g. 'backup-vda' */
  bitmap?: string;
}

/**
 * The export went away under the backup: QEMU closed or never opened the socket. libvirt ends a pull
 * job's export when the VM stops; a libvirtd restart that takes QEMU with it does the same.
 */
export function exportGone(exp: NbdExport, detail: string, cause?: unknown): VmctlError {
  return new VmctlError('CONNECTION', `the backup job's export of disk ${exp.name} went away (${detail}): the VM stopped or its libvirtd restarted`, {
    hint: 'see vmctl list --all, then run the backup again',
    ...(cause ? { cause } : {}),
  });
}

const GONE = /ECONNREFUSED|ENOENT|ECONNRESET|EPIPE|Connection refused|No such file or directory|Connection reset|Broken pipe/i;

export class NbdClient {
  private readonly pending = new Map<bigint, Pending>();
  private nextHandle = 1n;
  /** the reply header being received */
  private readonly header = Buffer.alloc(16);
  private headerFilled = 0;
  /** the reply whose data is arriving: its target and how much of it is filled */
  private current: { p: Pending; filled: number } | undefined;
  private failure: Error | undefined;

  private constructor(
    private readonly sock: Socket,
    readonly size: number,
    private readonly what: string,
  ) {}

  static async open(exp: NbdExport, signal?: AbortSignal): Promise<NbdClient> {
    const what = `NBD export ${exp.name} at ${exp.socket}`;
    // every read lands in one reused buffer (no allocation, no garbage per packet) and is consumed at once
    let got: (d: Buffer) => void = () => undefined;
    const sock = createConnection({
      path: exp.socket,
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER),
        callback: (n: number, buf: Uint8Array) => {
          got((buf as Buffer).subarray(0, n));
          return true;
        },
      },
    });
    const onAbort = () => sock.destroy(new Error('aborted'));
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await new Promise<void>((res, rej) => {
        sock.once('connect', res);
        sock.once('error', rej);
      });
      const reader = new HandshakeReader(sock);
      got = (d) => reader.push(Buffer.from(d));
      const greet = await reader.take(18);
      if (greet.readBigUInt64BE(0) !== NBDMAGIC || greet.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('not a newstyle NBD server');
      const serverFlags = greet.readUInt16BE(16);
      if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) throw new Error('the server is not fixed-newstyle');
      const clientFlags = Buffer.alloc(4);
      clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES));
      const name = Buffer.from(exp.name);
      const opt = Buffer.alloc(16 + 4 + name.length + 2);
      opt.writeBigUInt64BE(IHAVEOPT, 0);
      opt.writeUInt32BE(OPT_GO, 8);
      opt.writeUInt32BE(4 + name.length + 2, 12);
      opt.writeUInt32BE(name.length, 16);
      name.copy(opt, 20);
      opt.writeUInt16BE(0, 20 + name.length); // no information requests: NBD_INFO_EXPORT always comes
      sock.write(Buffer.concat([clientFlags, opt]));
      let size: number | undefined;
      for (;;) {
        const h = await reader.take(20);
        if (h.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw new Error('bad option reply');
        const type = h.readUInt32BE(12);
        const data = await reader.take(h.readUInt32BE(16));
        if (type & 0x80000000) throw new Error(`export '${exp.name}' refused (NBD error ${type & 0x7fffffff}${data.length ? `: ${data.toString('utf8', 4)}` : ''})`);
        if (type === REP_INFO && data.readUInt16BE(0) === INFO_EXPORT) size = Number(data.readBigUInt64BE(2));
        if (type === REP_ACK) break;
      }
      if (size === undefined) throw new Error('the server gave no export size');
      // the server sends nothing more until asked
      if (reader.rest().length > 0) throw new Error('unexpected data after the handshake');
      reader.stop();
      const c = new NbdClient(sock, size, what);
      got = (d) => c.received(d);
      sock.on('error', (e) => c.fail(exportGone(exp, e.message, e)));
      sock.on('close', () => c.fail(exportGone(exp, 'the server closed the connection')));
      return c;
    } catch (e) {
      sock.destroy();
      if (e instanceof VmctlError) throw e;
      const err = e as NodeJS.ErrnoException;
      if (err.message !== 'aborted' && GONE.test(`${err.code ?? ''} ${err.message}`)) throw exportGone(exp, err.message, e);
      throw new VmctlError('LIBVIRT', `${what}: ${err.message}`, { cause: e });
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Fill `buf` with the export's bytes at `offset`. Reads may be many at once; replies come in any order. */
  async read(buf: Buffer, offset: number): Promise<void> {
    const parts: Array<Promise<void>> = [];
    for (let off = 0; off < buf.length; off += MAX_REQUEST) parts.push(this.readOne(buf.subarray(off, Math.min(buf.length, off + MAX_REQUEST)), offset + off));
    await Promise.all(parts);
  }

  private readOne(buf: Buffer, offset: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (offset + buf.length > this.size) return Promise.reject(new VmctlError('INTERNAL', `${this.what}: read past the end (${offset}+${buf.length} > ${this.size})`));
    if (buf.length === 0) return Promise.resolve();
    const handle = this.nextHandle++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(handle, { buf, resolve, reject });
      this.sock.write(request(CMD_READ, handle, offset, buf.length));
    });
  }

  /** Disconnect politely (NBD_CMD_DISC), then close. */
  async close(): Promise<void> {
    if (!this.failure) {
      this.failure = new VmctlError('INTERNAL', `${this.what}: closed`);
      await new Promise<void>((res) => this.sock.end(request(CMD_DISC, 0n, 0, 0), res));
    }
    this.sock.destroy();
  }

  private fail(e: Error): void {
    if (!this.failure) this.failure = e;
    if (this.current) this.current.p.reject(this.failure);
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
    this.current = undefined;
  }

  /** Bytes from the socket (a view of the reused read buffer: consumed before returning). */
  private received(d: Buffer): void {
    let at = 0;
    while (at < d.length && !this.failure) {
      const cur = this.current;
      if (cur) {
        // data of the reply being received, straight into the caller's buffer
        const n = Math.min(d.length - at, cur.p.buf.length - cur.filled);
        d.copy(cur.p.buf, cur.filled, at, at + n);
        cur.filled += n;
        at += n;
        if (cur.filled === cur.p.buf.length) {
          this.current = undefined;
          cur.p.resolve();
        }
        continue;
      }
      const n = Math.min(d.length - at, 16 - this.headerFilled);
      d.copy(this.header, this.headerFilled, at, at + n);
      this.headerFilled += n;
      at += n;
      if (this.headerFilled === 16) {
        this.headerFilled = 0;
        this.onHeader();
      }
    }
  }

  private onHeader(): void {
    const h = this.header;
    if (h.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) {
      this.fail(new VmctlError('LIBVIRT', `${this.what}: unexpected reply magic 0x${h.readUInt32BE(0).toString(16)}`));
      this.sock.destroy();
      return;
    }
    const error = h.readUInt32BE(4);
    const handle = h.readBigUInt64BE(8);
    const p = this.pending.get(handle);
    if (!p) {
      this.fail(new VmctlError('LIBVIRT', `${this.what}: a reply to no request (${handle})`));
      this.sock.destroy();
      return;
    }
    this.pending.delete(handle);
    // an error reply to a read carries no data
    if (error !== 0) p.reject(new VmctlError('LIBVIRT', `${this.what}: read failed (NBD error ${error})`));
    else this.current = { p, filled: 0 };
  }
}

function request(type: number, handle: bigint, offset: number, length: number): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(0, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(handle, 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}

/** The handshake's bytes (push()ed as they arrive), taken n at a time. */
class HandshakeReader {
  private buf = Buffer.alloc(0);
  private want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  private readonly onEnd = () => this.want?.reject(new Error('the server closed the connection during the handshake'));
  private readonly onError = (e: Error) => this.want?.reject(e);

  constructor(private readonly sock: Socket) {
    sock.on('close', this.onEnd);
    sock.on('error', this.onError);
  }

  push(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    this.serve();
  }

  take(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.want = { n, resolve, reject };
      this.serve();
    });
  }

  rest(): Buffer {
    const r = this.buf;
    this.buf = Buffer.alloc(0);
    return r;
  }

  stop(): void {
    this.sock.off('close', this.onEnd);
    this.sock.off('error', this.onError);
  }

  private serve(): void {
    if (!this.want || this.buf.length < this.want.n) return;
    const { n, resolve } = this.want;
    this.want = undefined;
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    resolve(Buffer.from(out));
  }
}

/**
 * The export's extents (data or zero/hole), from qemu-img's NBD client (block status); with
 * `metaContext` (e.g. `qemu:dirty-bitmap:backup-vda`) that context's instead of the allocation —
 * qemu-img then reports a dirty extent as `"data": false`, a clean one as `"data": true`.
 */
export async function nbdExtents(exp: NbdExport, signal?: AbortSignal, metaContext?: string): Promise<MapExtent[]> {
  const esc = (v: string) => v.replace(/,/g, ',,');
  const opts = `driver=nbd,server.type=unix,server.path=${esc(exp.socket)},export=${esc(exp.name)}${metaContext ? `,x-dirty-bitmap=${esc(metaContext)}` : ''}`;
  const out = await qemuImg(['map', '--output=json', '--image-opts', opts], signal).catch((e: Error) => {
    const m = GONE.exec(e.message);
    throw m && !signal?.aborted ? exportGone(exp, `qemu-img map: ${m[0]}`, e) : e;
  });
  return JSON.parse(out) as MapExtent[];
}
