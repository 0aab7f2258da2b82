/**
 * XDR (RFC 4506) runtime used by the generated libvirt protocol code.
 *
 * Decoding is defensive: every length read from the wire is checked against the
 * bound declared in the .x file AND against the bytes actually left in the
 * buffer before anything is allocated, so a hostile or broken server can make
 * vmctl throw an XdrError, never allocate unbounded memory or loop forever.
 */

export class XdrError extends Error {
  override readonly name = 'XdrError';
}

export type Encoder<T> = (w: XdrWriter, v: T) => void;
export type Decoder<T> = (r: XdrReader) => T;

/** XDR's implicit limit for unbounded (`<>`) arrays, opaques and strings. */
export const XDR_UNBOUNDED = 0xffffffff;

/** How deeply present optionals (`T *x`) may nest while decoding (libvirt's types never nest them). */
export const XDR_MAX_OPTIONAL_DEPTH = 1000;

const pad4 = (n: number): number => (4 - (n & 3)) & 3;

const INT_MIN = -0x80000000;
const INT_MAX = 0x7fffffff;
const UINT_MAX = 0xffffffff;
const HYPER_MIN = -(1n << 63n);
const HYPER_MAX = (1n << 63n) - 1n;
const UHYPER_MAX = (1n << 64n) - 1n;

const utf8 = new TextDecoder('utf-8', { fatal: false });
const utf8enc = new TextEncoder();

export class XdrWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(initialSize = 256) {
    this.buf = Buffer.allocUnsafe(Math.max(16, initialSize));
  }

  get length(): number {
    return this.pos;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  writeInt(v: number): void {
    if (!Number.isInteger(v) || v < INT_MIN || v > INT_MAX) throw new XdrError(`int out of range: ${v}`);
    this.ensure(4);
    this.buf.writeInt32BE(v, this.pos);
    this.pos += 4;
  }

  writeUint(v: number): void {
    if (!Number.isInteger(v) || v < 0 || v > UINT_MAX) throw new XdrError(`unsigned int out of range: ${v}`);
    this.ensure(4);
    this.buf.writeUInt32BE(v, this.pos);
    this.pos += 4;
  }

  writeEnum(v: number): void {
    this.writeInt(v);
  }

  /** XDR `char`: sign-extended into a 4-byte int. */
  writeChar(v: number): void {
    if (!Number.isInteger(v) || v < -0x80 || v > 0x7f) throw new XdrError(`char out of range: ${v}`);
    this.writeInt(v);
  }

  /** XDR `unsigned char`: a 4-byte unsigned int holding 0..255. */
  writeUchar(v: number): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new XdrError(`unsigned char out of range: ${v}`);
    this.writeUint(v);
  }

  /** XDR `short`: sign-extended into a 4-byte int. */
  writeShort(v: number): void {
    if (!Number.isInteger(v) || v < -0x8000 || v > 0x7fff) throw new XdrError(`short out of range: ${v}`);
    this.writeInt(v);
  }

  /** XDR `unsigned short`: a 4-byte unsigned int holding 0..65535. */
  writeUshort(v: number): void {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new XdrError(`unsigned short out of range: ${v}`);
    this.writeUint(v);
  }

  writeBool(v: boolean): void {
    this.writeInt(v ? 1 : 0);
  }

  writeHyper(v: bigint): void {
    if (typeof v !== 'bigint' || v < HYPER_MIN || v > HYPER_MAX) throw new XdrError(`hyper out of range: ${String(v)}`);
    this.ensure(8);
    this.buf.writeBigInt64BE(v, this.pos);
    this.pos += 8;
  }

  writeUhyper(v: bigint): void {
    if (typeof v !== 'bigint' || v < 0n || v > UHYPER_MAX) throw new XdrError(`unsigned hyper out of range: ${String(v)}`);
    this.ensure(8);
    this.buf.writeBigUInt64BE(v, this.pos);
    this.pos += 8;
  }

  writeFloat(v: number): void {
    this.ensure(4);
    this.buf.writeFloatBE(v, this.pos);
    this.pos += 4;
  }

  writeDouble(v: number): void {
    this.ensure(8);
    this.buf.writeDoubleBE(v, this.pos);
    this.pos += 8;
  }

  private writeBytes(b: Uint8Array): void {
    const p = pad4(b.length);
    this.ensure(b.length + p);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    this.buf.fill(0, this.pos, this.pos + p);
    this.pos += p;
  }

  writeFixedOpaque(b: Uint8Array, len: number): void {
    if (b.length !== len) throw new XdrError(`fixed opaque needs ${len} bytes, got ${b.length}`);
    this.writeBytes(b);
  }

  writeVarOpaque(b: Uint8Array, max = XDR_UNBOUNDED): void {
    if (b.length > max) throw new XdrError(`opaque of ${b.length} bytes exceeds bound ${max}`);
    this.writeUint(b.length);
    this.writeBytes(b);
  }

  writeString(s: string, max = XDR_UNBOUNDED): void {
    if (typeof s !== 'string') throw new XdrError(`expected a string, got ${typeof s}`);
    const b = utf8enc.encode(s);
    if (b.length > max) throw new XdrError(`string of ${b.length} bytes exceeds bound ${max}`);
    this.writeUint(b.length);
    this.writeBytes(b);
  }

  writeFixedArray<T>(items: readonly T[], len: number, enc: Encoder<T>): void {
    if (items.length !== len) throw new XdrError(`fixed array needs ${len} elements, got ${items.length}`);
    for (const it of items) enc(this, it);
  }

  writeVarArray<T>(items: readonly T[], max: number, enc: Encoder<T>): void {
    if (items.length > max) throw new XdrError(`array of ${items.length} elements exceeds bound ${max}`);
    this.writeUint(items.length);
    for (const it of items) enc(this, it);
  }

  writeOptional<T>(v: T | null | undefined, enc: Encoder<T>): void {
    if (v === null || v === undefined) {
      this.writeUint(0);
    } else {
      this.writeUint(1);
      enc(this, v);
    }
  }

  /** Raw bytes with no length prefix or padding (stream payloads). */
  writeRaw(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** Overwrite a big-endian uint32 already written at `offset` (frame lengths). */
  patchUint(offset: number, v: number): void {
    if (offset + 4 > this.pos) throw new XdrError('patch past end of buffer');
    this.buf.writeUInt32BE(v, offset);
  }

  /** The bytes written so far (a view, valid until the next write). */
  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

export class XdrReader {
  private pos: number;
  private optionalDepth = 0;

  constructor(
    private readonly buf: Buffer,
    offset = 0,
    private readonly end = buf.length,
  ) {
    if (end > buf.length || offset > end) throw new XdrError('reader window outside buffer');
    this.pos = offset;
  }

  static from(b: Uint8Array): XdrReader {
    return new XdrReader(Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength));
  }

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number, what: string): void {
    if (n > this.end - this.pos) {
      throw new XdrError(`truncated XDR data: ${what} needs ${n} bytes, ${this.end - this.pos} left`);
    }
  }

  readInt(): number {
    this.need(4, 'int');
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  readUint(): number {
    this.need(4, 'unsigned int');
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  readEnum(): number {
    return this.readInt();
  }

  readChar(): number {
    const v = this.readInt();
    if (v < -0x80 || v > 0x7f) throw new XdrError(`char value ${v} out of range`);
    return v;
  }

  readUchar(): number {
    const v = this.readUint();
    if (v > 0xff) throw new XdrError(`unsigned char value ${v} out of range`);
    return v;
  }

  readShort(): number {
    const v = this.readInt();
    if (v < -0x8000 || v > 0x7fff) throw new XdrError(`short value ${v} out of range`);
    return v;
  }

  readUshort(): number {
    const v = this.readUint();
    if (v > 0xffff) throw new XdrError(`unsigned short value ${v} out of range`);
    return v;
  }

  readBool(): boolean {
    const v = this.readInt();
    if (v !== 0 && v !== 1) throw new XdrError(`invalid bool value ${v}`);
    return v === 1;
  }

  readHyper(): bigint {
    this.need(8, 'hyper');
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  readUhyper(): bigint {
    this.need(8, 'unsigned hyper');
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  readFloat(): number {
    this.need(4, 'float');
    const v = this.buf.readFloatBE(this.pos);
    this.pos += 4;
    return v;
  }

  readDouble(): number {
    this.need(8, 'double');
    const v = this.buf.readDoubleBE(this.pos);
    this.pos += 8;
    return v;
  }

  private readBytes(len: number, what: string): Buffer {
    const p = pad4(len);
    this.need(len + p, what);
    // copy: decoded values must not pin (or alias) the whole receive buffer
    const out = Buffer.from(this.buf.subarray(this.pos, this.pos + len));
    this.pos += len + p;
    return out;
  }

  readFixedOpaque(len: number): Buffer {
    return this.readBytes(len, `opaque[${len}]`);
  }

  private readLength(max: number, what: string, minElemSize: number): number {
    const n = this.readUint();
    if (n > max) throw new XdrError(`${what} length ${n} exceeds bound ${max}`);
    // each element needs at least minElemSize bytes: reject counts the data cannot hold
    if (minElemSize > 0 && n > Math.floor(this.remaining / minElemSize)) {
      throw new XdrError(`truncated XDR data: ${what} claims ${n} elements, ${this.remaining} bytes left`);
    }
    return n;
  }

  readVarOpaque(max = XDR_UNBOUNDED): Buffer {
    const n = this.readLength(max, 'opaque', 1);
    return this.readBytes(n, 'opaque');
  }

  readString(max = XDR_UNBOUNDED): string {
    const n = this.readLength(max, 'string', 1);
    const p = pad4(n);
    this.need(n + p, 'string');
    const s = utf8.decode(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n + p;
    return s;
  }

  readFixedArray<T>(len: number, dec: Decoder<T>): T[] {
    const out: T[] = new Array<T>(len);
    for (let i = 0; i < len; i++) out[i] = dec(this);
    return out;
  }

  /**
   * @param minElemSize smallest encoded size of one element (4 for every XDR
   * type except void); used to reject impossible counts before allocating.
   */
  readVarArray<T>(max: number, dec: Decoder<T>, minElemSize = 4): T[] {
    const n = this.readLength(max, 'array', minElemSize);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(dec(this));
    return out;
  }

  readOptional<T>(dec: Decoder<T>): T | null {
    const present = this.readUint();
    if (present === 0) return null;
    if (present !== 1) throw new XdrError(`invalid optional discriminant ${present}`);
    // optionals are the only way XDR types recurse (linked lists): bound the
    // nesting so hostile input gets an XdrError, not a stack overflow
    if (this.optionalDepth >= XDR_MAX_OPTIONAL_DEPTH) {
      throw new XdrError(`optional data nested deeper than ${XDR_MAX_OPTIONAL_DEPTH} levels`);
    }
    this.optionalDepth++;
    try {
      return dec(this);
    } finally {
      this.optionalDepth--;
    }
  }

  /** The rest of the window, raw (stream payloads). */
  readRest(): Buffer {
    const out = this.buf.subarray(this.pos, this.end);
    this.pos = this.end;
    return out;
  }

  /** Throw unless every byte was consumed (trailing garbage is a protocol error). */
  expectEnd(what = 'message'): void {
    if (this.pos !== this.end) throw new XdrError(`${this.end - this.pos} unexpected trailing bytes after ${what}`);
  }
}

/** Encode one value to a fresh Buffer. */
export function encode<T>(enc: Encoder<T>, v: T): Buffer {
  const w = new XdrWriter();
  enc(w, v);
  return Buffer.from(w.finish());
}

/** Decode one value, requiring the whole buffer to be consumed. */
export function decode<T>(dec: Decoder<T>, b: Uint8Array): T {
  const r = XdrReader.from(b);
  const v = dec(r);
  r.expectEnd();
  return v;
}

// Primitive coders, so generated code can pass them as element coders.
export const xdr = {
  encInt: (w: XdrWriter, v: number) => w.writeInt(v),
  decInt: (r: XdrReader) => r.readInt(),
  encUint: (w: XdrWriter, v: number) => w.writeUint(v),
  decUint: (r: XdrReader) => r.readUint(),
  encHyper: (w: XdrWriter, v: bigint) => w.writeHyper(v),
  decHyper: (r: XdrReader) => r.readHyper(),
  encUhyper: (w: XdrWriter, v: bigint) => w.writeUhyper(v),
  decUhyper: (r: XdrReader) => r.readUhyper(),
  encBool: (w: XdrWriter, v: boolean) => w.writeBool(v),
  decBool: (r: XdrReader) => r.readBool(),
  encFloat: (w: XdrWriter, v: number) => w.writeFloat(v),
  decFloat: (r: XdrReader) => r.readFloat(),
  encDouble: (w: XdrWriter, v: number) => w.writeDouble(v),
  decDouble: (r: XdrReader) => r.readDouble(),
  encChar: (w: XdrWriter, v: number) => w.writeChar(v),
  decChar: (r: XdrReader) => r.readChar(),
  encUchar: (w: XdrWriter, v: number) => w.writeUchar(v),
  decUchar: (r: XdrReader) => r.readUchar(),
  encShort: (w: XdrWriter, v: number) => w.writeShort(v),
  decShort: (r: XdrReader) => r.readShort(),
  encUshort: (w: XdrWriter, v: number) => w.writeUshort(v),
  decUshort: (r: XdrReader) => r.readUshort(),
} as const;
