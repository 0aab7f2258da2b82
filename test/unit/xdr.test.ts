/** Tests of the XDR runtime (src/libvirt/xdr) and of real generated decoders fed garbage. */
import { describe, expect, it } from 'vitest';
import {
  decode,
  encode,
  xdr,
  XDR_UNBOUNDED,
  XdrError,
  XdrReader,
  XdrWriter,
  type Decoder,
  type Encoder,
} from '../../src/libvirt/xdr/index.js';
import * as R from '../../src/libvirt/generated/remote.gen.js';
import * as V from '../../src/libvirt/generated/virnet.gen.js';
import * as Q from '../../src/libvirt/generated/qemu.gen.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function rt<T>(enc: Encoder<T>, dec: Decoder<T>, v: T, expectedHex?: string): void {
  const b = encode(enc, v);
  if (expectedHex !== undefined) expect(hex(b)).toBe(expectedHex);
  expect(decode(dec, b)).toEqual(v);
}

const u32 = (...ns: number[]): Buffer => {
  const w = new XdrWriter();
  for (const n of ns) w.writeUint(n);
  return Buffer.from(w.finish());
};

describe('XDR primitives round-trip with the RFC 4506 layout', () => {
  it('int / unsigned int / enum', () => {
    rt(xdr.encInt, xdr.decInt, 0, '00000000');
    rt(xdr.encInt, xdr.decInt, -1, 'ffffffff');
    rt(xdr.encInt, xdr.decInt, 0x7fffffff, '7fffffff');
    rt(xdr.encInt, xdr.decInt, -0x80000000, '80000000');
    rt(xdr.encUint, xdr.decUint, 0xffffffff, 'ffffffff');
    rt((w, v: number) => w.writeEnum(v), (r) => r.readEnum(), 6, '00000006');
  });

  it('hyper / unsigned hyper', () => {
    rt(xdr.encHyper, xdr.decHyper, -1n, 'ffffffffffffffff');
    rt(xdr.encHyper, xdr.decHyper, -(1n << 63n));
    rt(xdr.encHyper, xdr.decHyper, (1n << 63n) - 1n, '7fffffffffffffff');
    rt(xdr.encUhyper, xdr.decUhyper, (1n << 64n) - 1n, 'ffffffffffffffff');
    rt(xdr.encUhyper, xdr.decUhyper, 0x0102030405060708n, '0102030405060708');
  });

  it('bool, float, double', () => {
    rt(xdr.encBool, xdr.decBool, true, '00000001');
    rt(xdr.encBool, xdr.decBool, false, '00000000');
    rt(xdr.encFloat, xdr.decFloat, 1.5, '3fc00000');
    rt(xdr.encFloat, xdr.decFloat, -Infinity);
    rt(xdr.encFloat, xdr.decFloat, NaN);
    rt(xdr.encDouble, xdr.decDouble, Math.PI);
    rt(xdr.encDouble, xdr.decDouble, -0);
    rt(xdr.encDouble, xdr.decDouble, Number.MAX_VALUE);
  });

  it('char / unsigned char / short / unsigned short take 4 bytes each', () => {
    rt(xdr.encChar, xdr.decChar, -128, 'ffffff80');
    rt(xdr.encChar, xdr.decChar, 127, '0000007f');
    rt(xdr.encUchar, xdr.decUchar, 255, '000000ff');
    rt(xdr.encShort, xdr.decShort, -32768, 'ffff8000');
    rt(xdr.encUshort, xdr.decUshort, 65535, '0000ffff');
    expect(() => decode(xdr.decChar, u32(128))).toThrow(XdrError);
    expect(() => decode(xdr.decUchar, u32(256))).toThrow(XdrError);
    expect(() => decode(xdr.decShort, u32(0x8000))).toThrow(XdrError);
    expect(() => decode(xdr.decUshort, u32(0x10000))).toThrow(XdrError);
  });

  it('fixed and variable opaque, padded to 4 bytes', () => {
    rt((w, v: Buffer) => w.writeFixedOpaque(v, 3), (r) => r.readFixedOpaque(3), Buffer.from([1, 2, 3]), '01020300');
    rt((w, v: Buffer) => w.writeFixedOpaque(v, 4), (r) => r.readFixedOpaque(4), Buffer.from([1, 2, 3, 4]), '01020304');
    rt((w, v: Buffer) => w.writeVarOpaque(v), (r) => r.readVarOpaque(), Buffer.from([9]), '0000000109000000');
    rt((w, v: Buffer) => w.writeVarOpaque(v, 0), (r) => r.readVarOpaque(0), Buffer.alloc(0), '00000000');
    rt((w, v: Buffer) => w.writeVarOpaque(v), (r) => r.readVarOpaque(), Buffer.alloc(10_000, 0xab));
  });

  it('decoded opaques are copies, not views of the receive buffer', () => {
    const b = u32(4, 0x01020304);
    const o = decode((r) => r.readVarOpaque(), b);
    b.fill(0);
    expect(hex(o)).toBe('01020304');
  });

  it('strings are UTF-8 with byte-counted bounds', () => {
    rt((w, v: string) => w.writeString(v), (r) => r.readString(), '', '00000000');
    rt((w, v: string) => w.writeString(v), (r) => r.readString(), 'abcde', '000000056162636465000000');
    rt((w, v: string) => w.writeString(v, 4), (r) => r.readString(4), 'éx'); // 3 bytes
    expect(() => encode((w, v: string) => w.writeString(v, 4), 'ééé')).toThrow(/6 bytes exceeds bound 4/);
    expect(() => encode((w, v: string) => w.writeString(v), 5 as unknown as string)).toThrow(XdrError);
  });

  it('fixed and variable arrays, optionals', () => {
    rt((w, v: number[]) => w.writeFixedArray(v, 2, xdr.encInt), (r) => r.readFixedArray(2, xdr.decInt), [1, -1], '00000001ffffffff');
    rt((w, v: bigint[]) => w.writeVarArray(v, 3, xdr.encHyper), (r) => r.readVarArray(3, xdr.decHyper, 8), [1n, 2n], '0000000200000000000000010000000000000002');
    rt((w, v: number[]) => w.writeVarArray(v, XDR_UNBOUNDED, xdr.encInt), (r) => r.readVarArray(XDR_UNBOUNDED, xdr.decInt), []);
    rt((w, v: number | null) => w.writeOptional(v, xdr.encInt), (r) => r.readOptional(xdr.decInt), null, '00000000');
    rt((w, v: number | null) => w.writeOptional(v, xdr.encInt), (r) => r.readOptional(xdr.decInt), 5, '0000000100000005');
    expect(() => encode((w, v: number[]) => w.writeFixedArray(v, 2, xdr.encInt), [1])).toThrow(XdrError);
    expect(() => encode((w, v: number[]) => w.writeVarArray(v, 1, xdr.encInt), [1, 2])).toThrow(/exceeds bound 1/);
  });

  it('writers reject values that do not fit', () => {
    const bad: [string, (w: XdrWriter) => void][] = [
      ['int too big', (w) => w.writeInt(0x80000000)],
      ['int fraction', (w) => w.writeInt(1.5)],
      ['int NaN', (w) => w.writeInt(NaN)],
      ['uint negative', (w) => w.writeUint(-1)],
      ['uint too big', (w) => w.writeUint(2 ** 32)],
      ['hyper too big', (w) => w.writeHyper(1n << 63n)],
      ['hyper not bigint', (w) => w.writeHyper(1 as unknown as bigint)],
      ['uhyper negative', (w) => w.writeUhyper(-1n)],
      ['fixed opaque length', (w) => w.writeFixedOpaque(Buffer.alloc(3), 4)],
      ['opaque bound', (w) => w.writeVarOpaque(Buffer.alloc(5), 4)],
      ['char', (w) => w.writeChar(200)],
      ['ushort', (w) => w.writeUshort(-1)],
    ];
    for (const [what, f] of bad) expect(() => f(new XdrWriter()), what).toThrow(XdrError);
  });

  it('the writer grows and patches', () => {
    const w = new XdrWriter(16);
    w.writeUint(0);
    for (let i = 0; i < 10_000; i++) w.writeInt(i);
    w.patchUint(0, w.length);
    const b = w.finish();
    expect(b.length).toBe(40_004);
    expect(b.readUInt32BE(0)).toBe(40_004);
    expect(b.readInt32BE(40_000)).toBe(9_999);
    expect(() => w.patchUint(40_002, 1)).toThrow(XdrError);
    w.writeRaw(Buffer.from([1, 2, 3]));
    expect(w.length).toBe(40_007);
  });
});

describe('XDR decoding of broken input', () => {
  it('throws on truncated data for every type', () => {
    const cases: [string, Decoder<unknown>, Buffer][] = [
      ['int', xdr.decInt, Buffer.alloc(3)],
      ['hyper', xdr.decHyper, Buffer.alloc(7)],
      ['double', xdr.decDouble, Buffer.alloc(4)],
      ['fixed opaque', (r) => r.readFixedOpaque(5), Buffer.alloc(5)], // padding missing
      ['var opaque', (r) => r.readVarOpaque(), u32(8, 0)],
      ['var opaque length', (r) => r.readVarOpaque(), Buffer.alloc(2)],
      ['string', (r) => r.readString(), Buffer.concat([u32(5), Buffer.from('abcde')])], // padding missing
      ['fixed array', (r) => r.readFixedArray(3, xdr.decInt), u32(1, 2)],
      ['var array', (r) => r.readVarArray(10, xdr.decInt), u32(2, 1)],
      ['optional', (r) => r.readOptional(xdr.decInt), u32(1)],
      ['empty', xdr.decBool, Buffer.alloc(0)],
    ];
    for (const [what, dec, b] of cases) {
      expect(() => decode(dec, b), what).toThrow(XdrError);
      expect(() => decode(dec, b), what).toThrow(/truncated/);
    }
  });

  it('rejects huge counts fast, before allocating or decoding anything', () => {
    let calls = 0;
    const counting: Decoder<number> = (r) => {
      calls++;
      return r.readInt();
    };
    const b = Buffer.concat([u32(0xffffffff), Buffer.alloc(8)]);
    const t0 = performance.now();
    expect(() => decode((r) => r.readVarArray(XDR_UNBOUNDED, counting), b)).toThrow(/claims 4294967295 elements, 8 bytes left/);
    expect(() => decode((r) => r.readVarOpaque(), b)).toThrow(/truncated/);
    expect(() => decode((r) => r.readString(), b)).toThrow(/truncated/);
    expect(() => decode((r) => r.readVarArray(XDR_UNBOUNDED, R.decodeNonnullDomain, 24), Buffer.concat([u32(2), Buffer.alloc(40)]))).toThrow(
      /claims 2 elements, 40 bytes left/,
    );
    expect(performance.now() - t0).toBeLessThan(100);
    expect(calls).toBe(0);
  });

  it('rejects counts above the declared bound', () => {
    expect(() => decode((r) => r.readVarArray(2, xdr.decInt), u32(3, 1, 2, 3))).toThrow(/length 3 exceeds bound 2/);
    expect(() => decode((r) => r.readVarOpaque(2), u32(3, 0))).toThrow(/length 3 exceeds bound 2/);
    expect(() => decode((r) => r.readString(2), u32(3, 0))).toThrow(/length 3 exceeds bound 2/);
    // remote_nonnull_string is bounded by REMOTE_STRING_MAX
    expect(() => decode(R.decodeNonnullString, u32(R.REMOTE_STRING_MAX + 1))).toThrow(/exceeds bound 4194304/);
  });

  it('rejects invalid bool and optional discriminants', () => {
    expect(() => decode(xdr.decBool, u32(2))).toThrow(/invalid bool value 2/);
    expect(() => decode(xdr.decBool, u32(0xffffffff))).toThrow(/invalid bool value -1/);
    expect(() => decode((r) => r.readOptional(xdr.decInt), u32(2, 0))).toThrow(/invalid optional discriminant 2/);
    expect(() => decode(R.decodeString, u32(0xffffffff))).toThrow(XdrError);
  });

  it('rejects trailing garbage in decode() and expectEnd()', () => {
    expect(() => decode(xdr.decInt, u32(1, 2))).toThrow(/4 unexpected trailing bytes/);
    const r = new XdrReader(u32(1, 2));
    r.readInt();
    expect(r.remaining).toBe(4);
    expect(() => r.expectEnd('reply')).toThrow(/after reply/);
    expect(decode(xdr.decInt, u32(7))).toBe(7);
  });

  it('respects the reader window', () => {
    const b = u32(1, 2, 3, 4);
    const r = new XdrReader(b, 4, 12);
    expect(r.readInt()).toBe(2);
    expect(r.readInt()).toBe(3);
    expect(() => r.readInt()).toThrow(XdrError);
    expect(r.offset).toBe(12);
    expect(() => new XdrReader(b, 0, 17)).toThrow(XdrError);
    expect(() => new XdrReader(b, 9, 8)).toThrow(XdrError);
    const rest = new XdrReader(b, 8);
    expect(hex(rest.readRest())).toBe('0000000300000004');
    expect(rest.remaining).toBe(0);
    expect(XdrReader.from(new Uint8Array([0, 0, 0, 9])).readInt()).toBe(9);
  });
});

describe('generated decoders fed garbage', () => {
  /** mulberry32: a small deterministic PRNG, so failures reproduce */
  function prng(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  const dom = (): R.NonnullDomain => ({ name: 'vm-1', uuid: Buffer.alloc(16, 0x11), id: 3 });
  const samples: [string, Decoder<unknown>, Buffer][] = [
    [
      'DomainGetInfoRet',
      R.decodeDomainGetInfoRet,
      encode(R.encodeDomainGetInfoRet, { state: 1, maxMem: 1024n, memory: 512n, nrVirtCpu: 2, cpuTime: 123n }),
    ],
    [
      'VirNetMessageError',
      V.decodeVirNetMessageError,
      encode(V.encodeVirNetMessageError, {
        code: 42,
        domain: 10,
        message: 'Domain not found',
        level: 2,
        dom: { name: 'x', uuid: Buffer.alloc(16), id: -1 },
        str1: 'a',
        str2: null,
        str3: null,
        int1: 0,
        int2: 0,
        net: null,
      }),
    ],
    [
      'VirNetMessageHeader',
      V.decodeVirNetMessageHeader,
      encode(V.encodeVirNetMessageHeader, { prog: R.REMOTE_PROGRAM, vers: 1, proc: 1, type: 1, serial: 7, status: 0 }),
    ],
    [
      'NodeGetInfoRet',
      R.decodeNodeGetInfoRet,
      encode(R.encodeNodeGetInfoRet, { model: Array.from({ length: 32 }, (_, i) => (i < 6 ? 65 + i : 0)), memory: 1n, cpus: 2, mhz: 3, nodes: 1, sockets: 1, cores: 2, threads: 1 }),
    ],
    [
      'ConnectListAllDomainsRet',
      R.decodeConnectListAllDomainsRet,
      encode(R.encodeConnectListAllDomainsRet, { domains: [dom(), dom()], ret: 2 }),
    ],
    [
      'DomainGetSchedulerParametersRet (typed params)',
      R.decodeDomainGetSchedulerParametersRet,
      encode(R.encodeDomainGetSchedulerParametersRet, {
        params: [
          { field: 'cpu_shares', value: { type: 4, ul: 1024n } },
          { field: 's', value: { type: 7, s: 'str' } },
          { field: 'd', value: { type: 5, d: 0.5 } },
        ],
      }),
    ],
    [
      'DomainEventCallbackLifecycleMsg',
      R.decodeDomainEventCallbackLifecycleMsg,
      encode(R.encodeDomainEventCallbackLifecycleMsg, { callbackID: 1, msg: { dom: dom(), event: 5, detail: 1 } }),
    ],
    [
      'QemuDomainMonitorEventMsg',
      Q.decodeQemuDomainMonitorEventMsg,
      encode(Q.encodeQemuDomainMonitorEventMsg, { callbackID: 1, dom: dom(), event: 'STOP', seconds: 1n, micros: 2, details: null }),
    ],
  ];

  it('valid samples decode', () => {
    for (const [name, dec, b] of samples) expect(() => decode(dec, b), name).not.toThrow();
  });

  it('random and mutated buffers only ever produce values or XdrError', () => {
    const rand = prng(0x5eed);
    const decoders = [...samples.map(([n, d]) => [n, d] as const), ...[...R.REMOTE_EVENTS.values()].map((e) => [e.name, e.decode] as const)];
    const check = (name: string, dec: Decoder<unknown>, b: Buffer): void => {
      try {
        decode(dec, b);
      } catch (e) {
        if (!(e instanceof XdrError)) throw new Error(`${name} threw ${String(e)} for ${hex(b)}`);
      }
    };
    const t0 = performance.now();
    let runs = 0;
    for (let i = 0; i < 1000; i++) {
      // pure noise, biased toward small numbers so lengths/discriminants are sometimes plausible
      const len = Math.floor(rand() * 96);
      const noise = Buffer.alloc(len);
      for (let j = 0; j < len; j++) noise[j] = rand() < 0.6 ? 0 : Math.floor(rand() * 256);
      for (const [name, dec] of decoders) {
        check(name, dec, noise);
        runs++;
      }
      // mutations of valid encodings: flipped bytes, truncation, appended garbage
      for (const [name, dec, valid] of samples) {
        const m = Buffer.from(valid);
        const flips = 1 + Math.floor(rand() * 4);
        for (let k = 0; k < flips && m.length; k++) m[Math.floor(rand() * m.length)] = Math.floor(rand() * 256);
        check(name, dec, m);
        check(name, dec, m.subarray(0, Math.floor(rand() * m.length)));
        check(name, dec, Buffer.concat([valid, Buffer.alloc(1 + Math.floor(rand() * 8), 0xff)]));
        runs += 3;
      }
    }
    expect(runs).toBeGreaterThan(50_000);
    expect(performance.now() - t0).toBeLessThan(30_000);
  }, 60_000);
});
