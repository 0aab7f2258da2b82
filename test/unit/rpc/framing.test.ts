import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  FrameDecoder,
  MAX_PACKET_LENGTH,
  MIN_PACKET_LENGTH,
  encodePacket,
  parsePacket,
} from '../../../src/libvirt/rpc/framing.js';
import { LibvirtError } from '../../../src/libvirt/errors.js';
import { xdr } from '../../../src/libvirt/xdr/index.js';
import { VIR_NET_MESSAGE_MAX, VirNetMessageStatus, VirNetMessageType } from '../../../src/libvirt/rpc/protocol.js';
import type { VirNetMessageHeader } from '../../../src/libvirt/rpc/protocol.js';

const hdr = (serial: number): VirNetMessageHeader => ({
  prog: 0x20008086,
  vers: 1,
  proc: 7,
  type: VirNetMessageType.VIR_NET_REPLY,
  serial,
  status: VirNetMessageStatus.VIR_NET_OK,
});

function packet(serial: number, bodyLen: number): Buffer {
  const body = Buffer.alloc(bodyLen, serial & 0xff);
  return encodePacket(hdr(serial), { raw: body });
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('FrameDecoder', () => {
  it('limits match libvirt: 28-byte minimum, VIR_NET_MESSAGE_MAX + length word maximum', () => {
    expect(MIN_PACKET_LENGTH).toBe(28);
    expect(MAX_PACKET_LENGTH).toBe(VIR_NET_MESSAGE_MAX + 4);
  });

  it('reassembles packets fed one byte at a time', () => {
    const wire = Buffer.concat([packet(1, 0), packet(2, 13), packet(3, 1000)]);
    const d = new FrameDecoder();
    const out: Buffer[] = [];
    for (let i = 0; i < wire.length; i++) out.push(...d.push(wire.subarray(i, i + 1)));
    expect(out).toHaveLength(3);
    const parsed = out.map(parsePacket);
    expect(parsed.map((p) => p.header.serial)).toEqual([1, 2, 3]);
    expect(parsed.map((p) => p.body.length)).toEqual([0, 13, 1000]);
    expect(parsed[2]!.body.every((b) => b === 3)).toBe(true);
    expect(d.bufferedBytes).toBe(0);
  });

  it('splits many packets out of one chunk without copying them', () => {
    const parts = Array.from({ length: 500 }, (_, i) => packet(i + 1, i % 17));
    const wire = Buffer.concat(parts);
    const d = new FrameDecoder();
    const out = d.push(wire);
    expect(out).toHaveLength(500);
    expect(out.map((p) => parsePacket(p).header.serial)).toEqual(parts.map((_, i) => i + 1));
    // views into the received chunk, not copies
    expect(out.every((p) => p.buffer === wire.buffer)).toBe(true);
  });

  it('handles a packet split at every possible boundary, mixed with whole ones', () => {
    const a = packet(1, 50);
    const b = packet(2, 70);
    const wire = Buffer.concat([a, b]);
    for (let cut = 1; cut < wire.length; cut++) {
      const d = new FrameDecoder();
      const out = [...d.push(wire.subarray(0, cut)), ...d.push(wire.subarray(cut))];
      expect(out.map((p) => parsePacket(p).header.serial)).toEqual([1, 2]);
    }
  });

  it('copies each byte of a large split packet once (linear, not quadratic)', () => {
    const big = packet(9, 4 * 1024 * 1024);
    const d = new FrameDecoder();
    const copy = vi.spyOn(Buffer.prototype, 'copy');
    let out: Buffer[] = [];
    for (let off = 0; off < big.length; off += 1000) out = out.concat(d.push(big.subarray(off, off + 1000)));
    const copied = copy.mock.calls.reduce((n, c) => n + ((c[3] as number) - (c[2] as number)), 0);
    copy.mockRestore();
    expect(out).toHaveLength(1);
    expect(out[0]!.length).toBe(big.length - 4);
    expect(copied).toBeLessThanOrEqual(big.length + 8);
  });

  it('rejects an oversize length before allocating anything', () => {
    const d = new FrameDecoder();
    const allocUnsafe = vi.spyOn(Buffer, 'allocUnsafe');
    const alloc = vi.spyOn(Buffer, 'alloc');
    const head = Buffer.from([0x7f, 0xff, 0xff, 0xff]);
    let err: unknown;
    try {
      d.push(head);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LibvirtError);
    expect((err as LibvirtError).kind).toBe('protocol');
    expect((err as LibvirtError).message).toMatch(/2147483647 bytes .* too large/);
    const big = [...allocUnsafe.mock.calls, ...alloc.mock.calls].filter((c) => (c[0] as number) > 1024);
    expect(big).toEqual([]);
    // the decoder stays failed
    expect(() => d.push(packet(1, 0))).toThrow(LibvirtError);
  });

  it('rejects a length just over the limit and accepts one at the limit', () => {
    const over = Buffer.alloc(4);
    over.writeUInt32BE(MAX_PACKET_LENGTH + 1);
    expect(() => new FrameDecoder().push(over)).toThrow(/too large/);
    const at = Buffer.alloc(4);
    at.writeUInt32BE(MAX_PACKET_LENGTH);
    expect(new FrameDecoder().push(at)).toEqual([]);
  });

  it('rejects lengths too small to hold a header (even split across chunks)', () => {
    for (const len of [0, 3, 4, 27]) {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(len);
      const d = new FrameDecoder();
      d.push(b.subarray(0, 2));
      expect(() => d.push(b.subarray(2))).toThrow(/too small/);
    }
  });
});

describe('encodePacket', () => {
  it('writes the total length including the length word', () => {
    const p = encodePacket(hdr(5), { enc: xdr.encInt, value: -2 });
    expect(p.readUInt32BE(0)).toBe(p.length);
    expect(p.length).toBe(4 + 24 + 4);
    const parsed = parsePacket(p.subarray(4));
    expect(parsed.header).toEqual(hdr(5));
    expect(parsed.body.readInt32BE(0)).toBe(-2);
  });

  it('refuses to build a packet the daemon would reject, without killing anything', () => {
    let err: unknown;
    try {
      encodePacket(hdr(1), { raw: Buffer.alloc(VIR_NET_MESSAGE_MAX) });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LibvirtError);
    expect((err as LibvirtError).isConnectionLost()).toBe(false);
  });
});
