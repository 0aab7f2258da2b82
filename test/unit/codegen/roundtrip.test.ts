/**
 * Compile-and-run tests of the generated fixture code: it type-checks under
 * the project's strict settings, values round-trip through encode/decode with
 * the exact XDR layout, and every .x bound is enforced on decode.
 */
import { join } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { decode, encode, XdrError, XdrReader, XdrWriter, type Decoder, type Encoder } from '../../../src/libvirt/xdr/index.js';
import type { CallOptions, ProcedureSpec, RpcCaller, RpcStream } from '../../../src/libvirt/rpc/caller.js';
import * as B from './fixtures/basic.expected.js';
import * as C from './fixtures/fixture-constants.expected.js';
import * as P from './fixtures/program.expected.js';
import * as U from './fixtures/unions.expected.js';
import { FIXTURE_DIR } from './harness.js';

function roundTrip<T>(enc: Encoder<T>, dec: Decoder<T>, v: T): Buffer {
  const bytes = encode(enc, v);
  expect(bytes.length % 4).toBe(0);
  expect(decode(dec, bytes)).toEqual(v);
  // and re-encoding the decoded value gives the same bytes
  expect(encode(enc, decode(dec, bytes))).toEqual(bytes);
  return bytes;
}

const u32 = (...ns: number[]): Buffer => {
  const w = new XdrWriter();
  for (const n of ns) w.writeUint(n);
  return Buffer.from(w.finish());
};

const thing = (name: string, id: number): B.NonnullThing => ({ name, uuid: Buffer.alloc(16, id), id });

describe('generated fixture code compiles', () => {
  it('type-checks under the project compiler options (strict, noUncheckedIndexedAccess)', () => {
    const files = ['basic', 'unions', 'program', 'fixture-constants'].map((n) => join(FIXTURE_DIR, `${n}.expected.ts`));
    const program = ts.createProgram(files, {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      lib: ['lib.es2022.d.ts'],
      types: ['node'],
      strict: true,
      noUncheckedIndexedAccess: true,
      noImplicitOverride: true,
      noFallthroughCasesInSwitch: true,
      noUnusedLocals: true,
      skipLibCheck: true,
      noEmit: true,
    });
    const diags = ts.getPreEmitDiagnostics(program).map((d) => {
      const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : undefined;
      return `${d.file?.fileName ?? '?'}:${where ? where.line + 1 : '?'}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
    expect(diags).toEqual([]);
  }, 60_000);
});

describe('basic.x', () => {
  it('exports consts with their .x names and resolved values', () => {
    expect([B.FIX_STRING_MAX, B.FIX_PROGRAM_ID, B.FIX_LIST_MAX, B.FIX_OCTAL, B.FIX_NEGATIVE, B.FIX_NAME_LEN]).toEqual([
      64, 0x20008086, 4, 8, -2, 16,
    ]);
    expect(B.Color.REMOTE_COLOR_BLUE).toBe(4);
    expect(B.Color.REMOTE_COLOR_DEFAULT).toBe(B.Color.REMOTE_COLOR_RED);
  });

  it('round-trips every scalar with the XDR layout', () => {
    const v: B.Scalars = {
      i: -5,
      ui: 0xffffffff,
      u: 7,
      h: -(1n << 63n),
      uh: (1n << 64n) - 1n,
      flag: true,
      f: 1.5,
      d: Math.PI,
      c: -128,
      uc: 255,
      s: -32768,
      us: 65535,
      color: B.Color.REMOTE_COLOR_GREEN,
      color2: B.Color.REMOTE_COLOR_BLUE,
    };
    const bytes = roundTrip(B.encodeScalars, B.decodeScalars, v);
    // 4 ints + 2 hypers + bool + float + double + 4 small ints (4 bytes each) + 2 enums
    expect(bytes.length).toBe(4 * 3 + 8 * 2 + 4 + 4 + 8 + 4 * 4 + 4 * 2);
    expect(bytes.readInt32BE(0)).toBe(-5);
    expect(bytes.readInt32BE(44)).toBe(-128); // char is sign-extended to 4 bytes
    expect(bytes.readUInt32BE(48)).toBe(255);
  });

  it('rejects out-of-range small integers both ways', () => {
    const base: B.Scalars = { i: 0, ui: 0, u: 0, h: 0n, uh: 0n, flag: false, f: 0, d: 0, c: 0, uc: 0, s: 0, us: 0, color: 1, color2: 1 };
    expect(() => encode(B.encodeScalars, { ...base, uc: 256 })).toThrow(XdrError);
    expect(() => encode(B.encodeScalars, { ...base, c: 128 })).toThrow(XdrError);
    expect(() => encode(B.encodeScalars, { ...base, us: -1 })).toThrow(XdrError);
    const bytes = encode(B.encodeScalars, base);
    bytes.writeUInt32BE(256, 48); // uc
    expect(() => decode(B.decodeScalars, bytes)).toThrow(XdrError);
  });

  const composites = (): B.Composites => ({
    fixedBytes: Buffer.from([1, 2, 3, 4, 5, 6]),
    varBytes: Buffer.from([9, 9, 9]),
    anyBytes: Buffer.alloc(1000, 7),
    shortName: 'sixteen-bytes-ok',
    anyName: 'x'.repeat(5000),
    fixedInts: [1, -2, 3],
    varHypers: [1n, 2n, 3n, 4n],
    things: [thing('a', 1), thing('b', 2)],
    names: ['one', 'two', ''],
    model: [120, 56, 54, 0],
    maybeInt: 42,
    maybeThing: null,
    thingOrNull: thing('c', 3),
    comment: null,
  });

  it('round-trips opaques, strings, arrays and optionals', () => {
    const bytes = roundTrip(B.encodeComposites, B.decodeComposites, composites());
    expect(bytes.subarray(0, 8)).toEqual(Buffer.from([1, 2, 3, 4, 5, 6, 0, 0])); // fixed opaque, zero padded
    roundTrip(B.encodeComposites, B.decodeComposites, { ...composites(), maybeInt: null, maybeThing: thing('d', 4), thingOrNull: null, comment: 'hi' });
  });

  it('round-trips a linked list (self-referencing optional) and nested optionals', () => {
    const list: B.Node = { label: 'a', next: { label: null, next: { label: 'c', next: null } } };
    roundTrip(B.encodeNode, B.decodeNode, list);
    roundTrip(B.encodeTree, B.decodeTree, { head: list, extra: composites() });
    roundTrip(B.encodeTree, B.decodeTree, { head: null, extra: null });
  });

  it('round-trips typedefs of arrays, fixed arrays and empty structs', () => {
    const bytes = roundTrip(B.encodeHoldsEmpty, B.decodeHoldsEmpty, {
      empties: [{}, {}, {}],
      ints: [1, 2],
      pair: [thing('x', 1), thing('y', 2)],
      alias: 'alias',
    });
    expect(bytes.readUInt32BE(0)).toBe(3); // three empties: just the count
  });

  it('enforces every bound on encode', () => {
    const bad: Partial<B.Composites>[] = [
      { fixedBytes: Buffer.alloc(5) },
      { varBytes: Buffer.alloc(5) },
      { shortName: 'x'.repeat(17) },
      { shortName: 'é'.repeat(9) }, // 18 UTF-8 bytes: bounds count bytes, not characters
      { fixedInts: [1, 2] },
      { varHypers: [1n, 2n, 3n, 4n, 5n] },
      { things: [thing('a', 1), thing('a', 1), thing('a', 1), thing('a', 1), thing('a', 1)] },
      { things: [thing('y'.repeat(65), 1)] }, // remote_nonnull_string<FIX_STRING_MAX>
      { model: [1, 2, 3, 4, 5] },
    ];
    for (const b of bad) expect(() => encode(B.encodeComposites, { ...composites(), ...b }), JSON.stringify(Object.keys(b))).toThrow(XdrError);
  });

  it('enforces every bound on decode', () => {
    // encode with the bounds lifted, then decode with the generated (bounded) decoder
    const w = new XdrWriter();
    w.writeString('x'.repeat(65));
    expect(() => decode(B.decodeNonnullString, w.finish())).toThrow(/exceeds bound 64/);
    expect(() => decode(B.decodeIntList, u32(5, 1, 2, 3, 4, 5))).toThrow(/exceeds bound 4/);
    expect(() => decode(B.decodeIntList, u32(0xffffffff, 1))).toThrow(XdrError);
    const lifted = (v: B.Composites): Buffer => {
      const x = new XdrWriter();
      x.writeFixedOpaque(v.fixedBytes, 6);
      x.writeVarOpaque(v.varBytes);
      x.writeVarOpaque(v.anyBytes);
      x.writeString(v.shortName);
      x.writeString(v.anyName);
      x.writeFixedArray(v.fixedInts, 3, (ww, n) => ww.writeInt(n));
      x.writeVarArray(v.varHypers, 99, (ww, n) => ww.writeUhyper(n));
      x.writeVarArray(v.things, 99, B.encodeNonnullThing);
      x.writeVarArray(v.names, 99, (ww, s) => ww.writeString(s));
      x.writeFixedArray(v.model, 4, (ww, n) => ww.writeInt(n));
      x.writeOptional(v.maybeInt, (ww, n) => ww.writeInt(n));
      x.writeOptional(v.maybeThing, B.encodeNonnullThing);
      B.encodeThing(x, v.thingOrNull);
      B.encodeString(x, v.comment);
      return Buffer.from(x.finish());
    };
    expect(decode(B.decodeComposites, lifted(composites()))).toEqual(composites());
    expect(() => decode(B.decodeComposites, lifted({ ...composites(), varBytes: Buffer.alloc(5) }))).toThrow(/opaque length 5 exceeds bound 4/);
    expect(() => decode(B.decodeComposites, lifted({ ...composites(), shortName: 'x'.repeat(17) }))).toThrow(/string length 17 exceeds bound 16/);
    expect(() => decode(B.decodeComposites, lifted({ ...composites(), varHypers: [1n, 2n, 3n, 4n, 5n] }))).toThrow(/array length 5 exceeds bound 4/);
    expect(() => decode(B.decodeComposites, lifted({ ...composites(), model: [1, 2, 3, 1000] }))).toThrow(/char value 1000/);
    expect(() => decode(B.decodeComposites, lifted({ ...composites(), names: ['z'.repeat(65)] }))).toThrow(/exceeds bound 64/);
  });

  it('rejects array counts the remaining data cannot hold, using the exact element size', () => {
    // 3 NonnullThings need at least 3 * 24 bytes; 40 bytes left must be rejected before decoding any
    const b = Buffer.concat([u32(3), Buffer.alloc(40)]);
    const r = new XdrReader(b);
    expect(() => r.readVarArray(B.FIX_LIST_MAX, B.decodeNonnullThing, 24)).toThrow(/claims 3 elements, 40 bytes left/);
    expect(() => decode(B.decodeComposites, Buffer.alloc(8))).toThrow(XdrError);
  });

  it('caps the nesting of optionals', () => {
    const deep = new XdrWriter();
    for (let i = 0; i < 5000; i++) {
      deep.writeUint(0); // label: null
      deep.writeUint(1); // next: present
    }
    deep.writeUint(0);
    deep.writeUint(0);
    expect(() => decode(B.decodeNode, deep.finish())).toThrow(XdrError);
  });
});

describe('unions.x', () => {
  it('round-trips every arm, including fall-through labels, void and default arms', () => {
    const values: U.UniValue[] = [
      { type: 1, i: -1 },
      { type: 4, s: 'abc' },
      { type: 5, pair: 5n },
      { type: 6, pair: -6n },
      { type: 9 },
      { type: 1234, raw: Buffer.from([1, 2]) },
    ];
    for (const v of values) roundTrip(U.encodeUniValue, U.decodeUniValue, v);
    expect(encode(U.encodeUniValue, { type: 9 })).toEqual(u32(9));
    expect(decode(U.decodeUniValue, u32(7, 0))).toEqual({ type: 7, raw: Buffer.alloc(0) });
  });

  it('uses the C header constant values as case labels', () => {
    expect(decode(U.decodeUniValue, Buffer.concat([u32(C.FixKind.FIX_KIND_STRING, 2), Buffer.from('hi\0\0')]))).toEqual({ type: 4, s: 'hi' });
  });

  it('rejects unknown discriminants when there is no default arm', () => {
    roundTrip(U.encodeUniByKind, U.decodeUniByKind, { kind: 0 });
    roundTrip(U.encodeUniByKind, U.decodeUniByKind, { kind: 2, n: 7 });
    expect(() => decode(U.decodeUniByKind, u32(3, 0))).toThrow(/UniByKind: unknown kind 3/);
    expect(() => encode(U.encodeUniByKind, { kind: 3 } as unknown as U.UniByKind)).toThrow(XdrError);
  });

  it('handles unsigned and bool discriminants', () => {
    roundTrip(U.encodeUniUnsigned, U.decodeUniUnsigned, { tag: 0xffffffff, inner: { type: 1, i: 3 } });
    roundTrip(U.encodeUniUnsigned, U.decodeUniUnsigned, { tag: 7 });
    roundTrip(U.encodeUniBool, U.decodeUniBool, { present: true, value: { kind: 1, n: 1 } });
    roundTrip(U.encodeUniBool, U.decodeUniBool, { present: false });
    expect(() => decode(U.decodeUniBool, u32(2))).toThrow(/invalid bool/);
    roundTrip(U.encodeUniHolder, U.decodeUniHolder, {
      values: [{ type: 1, i: 1 }, { type: 9 }],
      maybe: { present: false },
      u: { tag: 0 },
    });
  });

  it('enforces bounds inside arms', () => {
    expect(() => encode(U.encodeUniValue, { type: 4, s: 'abcd' })).toThrow(XdrError);
    expect(() => decode(U.decodeUniValue, Buffer.concat([u32(4, 4), Buffer.from('abcd')]))).toThrow(/exceeds bound 3/);
    expect(() => decode(U.decodeUniValue, u32(1234, 4, 0))).toThrow(/exceeds bound 3/);
  });
});

describe('program.x', () => {
  interface Recorded {
    kind: 'call' | 'stream';
    spec: ProcedureSpec<unknown, unknown>;
    args: unknown;
    opts: CallOptions | undefined;
  }
  class FakeCaller implements RpcCaller {
    readonly calls: Recorded[] = [];
    constructor(private readonly reply: unknown) {}
    call<A, R>(spec: ProcedureSpec<A, R>, args: A, opts?: CallOptions): Promise<R> {
      this.calls.push({ kind: 'call', spec: spec as ProcedureSpec<unknown, unknown>, args, opts });
      if (spec.encodeArgs) encode(spec.encodeArgs, args); // the arguments must encode, as in the real client
      return Promise.resolve(this.reply as R);
    }
    callStream<A, R>(spec: ProcedureSpec<A, R>, args: A, opts?: CallOptions): Promise<{ ret: R; stream: RpcStream }> {
      this.calls.push({ kind: 'stream', spec: spec as ProcedureSpec<unknown, unknown>, args, opts });
      if (spec.encodeArgs) encode(spec.encodeArgs, args);
      return Promise.resolve({ ret: this.reply as R, stream: {} as RpcStream });
    }
  }

  it('emits one ProcedureSpec per call with program, version, number, codecs and flags', () => {
    expect(P.FIX_PROC_DOMAIN_LOOKUP_BY_NAME_SPEC).toEqual({
      name: 'FIX_PROC_DOMAIN_LOOKUP_BY_NAME',
      program: 0x20001234,
      version: 1,
      procedure: 3,
      encodeArgs: P.encodeFixDomainLookupByNameArgs,
      decodeRet: P.decodeFixDomainLookupByNameRet,
      priority: true,
    });
    expect(P.FIX_PROC_CONNECT_CLOSE_SPEC.encodeArgs).toBeNull();
    expect(P.FIX_PROC_CONNECT_CLOSE_SPEC.decodeRet).toBeNull();
    expect(P.FIX_PROC_VOL_UPLOAD_SPEC.stream).toBe('write');
    expect(P.FIX_PROC_VOL_DOWNLOAD_SPEC.stream).toBe('read');
    expect(P.FIX_PROC_VOL_DOWNLOAD_SPEC.priority).toBeUndefined(); // @priority: low
    expect(P.FIX_PROC_OPEN_CONSOLE_SPEC.stream).toBe('both'); // override of @readstream
    expect([...P.FIX_PROCEDURES.keys()]).toEqual([1, 2, 3, 4, 5, 6, 7, 10]);
    expect(P.FIX_PROCEDURES.get(P.FixProcedure.FIX_PROC_PING)).toBe(P.FIX_PROC_PING_SPEC);
  });

  it('routes methods to call / callStream with the right spec and arguments', async () => {
    const rpc = new FakeCaller({ dom: thing('vm', 1) });
    const procs = new P.FixProcedures(rpc);
    const signal = new AbortController().signal;
    const r = await procs.domainLookupByName({ name: 'vm' }, { signal });
    expect(r.dom.name).toBe('vm');
    await procs.connectClose();
    await procs.ping({ timeoutMs: 5 });
    const up = await procs.volUpload({ vol: 'v', offset: 0n });
    expect(up.ret).toEqual({ dom: thing('vm', 1) }); // whatever the caller returned
    await procs.openConsole({ dom: thing('vm', 1), devName: null });
    expect(rpc.calls.map((c) => [c.kind, c.spec.name, c.args, c.opts])).toEqual([
      ['call', 'FIX_PROC_DOMAIN_LOOKUP_BY_NAME', { name: 'vm' }, { signal }],
      ['call', 'FIX_PROC_CONNECT_CLOSE', undefined, undefined],
      ['call', 'FIX_PROC_PING', undefined, { timeoutMs: 5 }],
      ['stream', 'FIX_PROC_VOL_UPLOAD', { vol: 'v', offset: 0n }, undefined],
      ['stream', 'FIX_PROC_OPEN_CONSOLE', { dom: thing('vm', 1), devName: null }, undefined],
    ]);
    expect('eventLifecycle' in procs).toBe(false); // events get no method
  });

  it('decodes events through the event table', () => {
    const msg: P.FixEventLifecycleMsg = { callbackID: 3, dom: thing('vm', 9), event: 2 };
    const bytes = encode(P.encodeFixEventLifecycleMsg, msg);
    const ev = P.FIX_EVENTS.get(P.FixProcedure.FIX_PROC_EVENT_LIFECYCLE);
    expect(ev?.name).toBe('FIX_PROC_EVENT_LIFECYCLE');
    expect(ev && decode(ev.decode, bytes)).toEqual(msg);
    expect([...P.FIX_EVENTS.keys()]).toEqual([8, 9]);
    // the typed map gives the body type by procedure number
    const typed: P.FixEventMap[P.FixProcedure.FIX_PROC_EVENT_REBOOT] = { dom: thing('vm', 9) };
    expect(typed.dom.id).toBe(9);
  });

  it('uses the types of another generated module', () => {
    roundTrip(P.encodeFixConnectOpenArgs, P.decodeFixConnectOpenArgs, { name: null, flags: 1 });
    expect(() => encode(P.encodeFixDomainLookupByNameArgs, { name: 'n'.repeat(65) })).toThrow(XdrError);
  });
});

describe('fixture.h constants', () => {
  it('evaluates C enum expressions and integer macros, skipping the rest', () => {
    expect(C.FixKind.FIX_KIND_BOTH).toBe(5);
    expect(C.FixKind.FIX_KIND_NEXT).toBe(6);
    expect(C.FixKind.FIX_KIND_NEG).toBe(-3);
    expect(C.FixKind.FIX_KIND_HIGH).toBe(2 ** 31);
    expect(C.FixKind.FIX_KIND_LAST).toBe(2 ** 31 + 1);
    expect(C.FixAlias.FIX_ALIAS_B).toBe(C.FixAlias.FIX_ALIAS_A);
    expect(C.FIX_NAME_MAX).toBe(16);
    expect(C.FIX_BIG).toBe(9007199254740993n);
    expect(Object.keys(C)).not.toContain('FIX_NOT_AN_INT');
    expect(Object.keys(C)).not.toContain('FIX_FUNC');
    expect(C.LIBVIRT_PROTOCOL_SOURCE_VERSION).toBe("fixture 1.0 (it's a test)");
  });
});
