/**
 * libvirt RPC packet framing.
 *
 * On the wire every packet is: a 4-byte big-endian length that counts the whole
 * packet INCLUDING the length word itself, then the 24-byte virNetMessageHeader,
 * then the body. libvirt (virNetMessageDecodeLength) rejects packets whose
 * length minus the length word exceeds VIR_NET_MESSAGE_MAX; we do the same, and
 * additionally reject packets too short to hold a header.
 */
import { XdrReader, XdrWriter } from '../xdr/index.js';
import type { Encoder } from '../xdr/index.js';
import {
  VIR_NET_MESSAGE_HEADER_MAX,
  VIR_NET_MESSAGE_LEN_MAX,
  VIR_NET_MESSAGE_MAX,
  decodeVirNetMessageHeader,
  encodeVirNetMessageHeader,
} from './protocol.js';
import type { VirNetMessageHeader } from './protocol.js';
import { LibvirtError } from '../errors.js';

/** Smallest valid packet: length word + header. */
export const MIN_PACKET_LENGTH = VIR_NET_MESSAGE_LEN_MAX + VIR_NET_MESSAGE_HEADER_MAX;
/** Largest packet libvirt accepts, length word included. */
export const MAX_PACKET_LENGTH = VIR_NET_MESSAGE_MAX + VIR_NET_MESSAGE_LEN_MAX;

/**
 * Incremental packet splitter. push() takes arbitrary chunks of the byte stream
 * and returns every packet completed by them (header + body, without the length
 * word). A packet that lies entirely inside one chunk is returned as a view of
 * that chunk (no copy); a packet spanning chunks is copied exactly once into a
 * buffer of its validated size. Lengths are checked BEFORE anything is allocated.
 *
 * After push() threw, the decoder is unusable (the stream is out of sync).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private head = 0; // index of the first live chunk in `chunks`
  private headOffset = 0; // bytes already consumed from chunks[head]
  private buffered = 0; // unconsumed bytes across live chunks
  private need = -1; // total length of the packet being assembled, -1 = unknown
  private failed: LibvirtError | null = null;

  constructor(private readonly maxPacketLength = MAX_PACKET_LENGTH) {}

  /** Bytes received but not yet returned as packets. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): Buffer[] {
    if (this.failed) throw this.failed;
    const out: Buffer[] = [];
    if (chunk.length === 0) return out;
    this.chunks.push(chunk);
    this.buffered += chunk.length;

    for (;;) {
      if (this.need < 0) {
        if (this.buffered < 4) break;
        const len = this.peekUint32();
        if (len < MIN_PACKET_LENGTH || len > this.maxPacketLength) {
          this.failed = LibvirtError.protocol(
            len < MIN_PACKET_LENGTH
              ? `packet of ${len} bytes received from the daemon is too small (minimum ${MIN_PACKET_LENGTH})`
              : `packet of ${len} bytes received from the daemon is too large (maximum ${this.maxPacketLength})`,
          );
          this.reset();
          throw this.failed;
        }
        this.need = len;
      }
      if (this.buffered < this.need) break;
      const packet = this.take(this.need);
      this.need = -1;
      out.push(packet.subarray(VIR_NET_MESSAGE_LEN_MAX));
    }
    this.compact();
    return out;
  }

  private peekUint32(): number {
    const first = this.chunks[this.head]!;
    if (first.length - this.headOffset >= 4) return first.readUInt32BE(this.headOffset);
    const tmp = Buffer.allocUnsafe(4);
    this.copyOut(tmp, 4, false);
    return tmp.readUInt32BE(0);
  }

  /** Remove and return the next n bytes (n <= buffered). */
  private take(n: number): Buffer {
    const first = this.chunks[this.head]!;
    if (first.length - this.headOffset >= n) {
      const view = first.subarray(this.headOffset, this.headOffset + n);
      this.headOffset += n;
      this.buffered -= n;
      if (this.headOffset === first.length) {
        this.chunks[this.head] = EMPTY;
        this.head++;
        this.headOffset = 0;
      }
      return view;
    }
    const buf = Buffer.allocUnsafe(n);
    this.copyOut(buf, n, true);
    return buf;
  }

  /** Copy the next n bytes into dst; consume them when `consume`. */
  private copyOut(dst: Buffer, n: number, consume: boolean): void {
    let copied = 0;
    let i = this.head;
    let off = this.headOffset;
    while (copied < n) {
      const c = this.chunks[i]!;
      const take = Math.min(n - copied, c.length - off);
      c.copy(dst, copied, off, off + take);
      copied += take;
      off += take;
      if (off === c.length) {
        if (consume) this.chunks[i] = EMPTY;
        i++;
        off = 0;
      }
    }
    if (consume) {
      this.head = i;
      this.headOffset = off;
      this.buffered -= n;
    }
  }

  private compact(): void {
    if (this.head === 0) return;
    if (this.head >= this.chunks.length) {
      this.chunks = [];
      this.head = 0;
    } else if (this.head > 64 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }

  private reset(): void {
    this.chunks = [];
    this.head = 0;
    this.headOffset = 0;
    this.buffered = 0;
    this.need = -1;
  }
}

const EMPTY = Buffer.alloc(0);

/** A parsed incoming packet: header plus a view of the body. */
export interface Packet {
  header: VirNetMessageHeader;
  body: Buffer;
}

/** Parse the header of a packet returned by FrameDecoder (throws XdrError on garbage). */
export function parsePacket(packet: Buffer): Packet {
  const r = new XdrReader(packet);
  const header = decodeVirNetMessageHeader(r);
  return { header, body: packet.subarray(r.offset) };
}

/**
 * Encode one outgoing packet: length word, header, then either an XDR-encoded
 * body or raw bytes. Throws LibvirtError (kind 'protocol', connection NOT
 * affected) when the packet would exceed what the daemon accepts.
 */
export function encodePacket<T>(
  header: VirNetMessageHeader,
  body?: { enc: Encoder<T>; value: T } | { raw: Uint8Array },
): Buffer {
  const w = new XdrWriter(body && 'raw' in body ? body.raw.length + MIN_PACKET_LENGTH : 256);
  w.writeUint(0);
  encodeVirNetMessageHeader(w, header);
  if (body) {
    if ('raw' in body) w.writeRaw(body.raw);
    else body.enc(w, body.value);
  }
  const len = w.length;
  if (len > MAX_PACKET_LENGTH) {
    throw new LibvirtError(
      `message of ${len} bytes exceeds the libvirt RPC limit of ${MAX_PACKET_LENGTH} bytes`,
      { kind: 'protocol', connectionLost: false },
    );
  }
  w.patchUint(0, len);
  // finish() is a view into the writer's buffer; the writer is not reused, so no copy needed
  return w.finish();
}
