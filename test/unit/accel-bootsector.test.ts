/**
 * The accelerator probe's hand-assembled boot sector: size, signature, and a
 * small independent decoder (only the opcodes this sector may contain) that
 * turns the bytes back into instructions, which must read as intended.
 */
import { describe, expect, it } from 'vitest';
import {
  BOOT_SECTOR_SIZE,
  DEBUG_EXIT_PORT,
  PROBE_DISK_SIZE,
  PROBE_ITERATIONS,
  PROBE_LAYOUT,
  PROOF_OFFSET,
  buildProbeBootSector,
  buildProbeDisk,
  hasProof,
} from '../../src/core/host/bootsector.js';

interface Insn {
  at: number;
  text: string;
  next: number;
}

const REG16 = ['ax', 'cx', 'dx', 'bx', 'sp', 'bp', 'si', 'di'];
const REG32 = REG16.map((r) => `e${r}`);
const REG8 = ['al', 'cl', 'dl', 'bl', 'ah', 'ch', 'dh', 'bh'];
const SREG = ['es', 'cs', 'ss', 'ds'];
const hex = (n: number) => `0x${n.toString(16)}`;

/** Decodes one 16-bit real-mode instruction (the subset the probe uses; anything else throws). */
function decode(b: Buffer, at: number): Insn {
  let i = at;
  let o32 = false;
  if (b[i] === 0x66) {
    o32 = true;
    i++;
  }
  const op = b[i++]!;
  const u16 = () => {
    const v = b.readUInt16LE(i);
    i += 2;
    return v;
  };
  const u32 = () => {
    const v = b.readUInt32LE(i);
    i += 4;
    return v;
  };
  const rel8 = () => {
    const d = b.readInt8(i);
    i += 1;
    return i + d;
  };
  let text: string;
  if (op === 0xfa) text = 'cli';
  else if (op === 0xfb) text = 'sti';
  else if (op === 0xf4) text = 'hlt';
  else if (op === 0x31) {
    const m = b[i++]!;
    if (m >> 6 !== 3) throw new Error('xor: memory operand');
    text = `xor ${REG16[m & 7]}, ${REG16[(m >> 3) & 7]}`;
  } else if (op === 0x8e) {
    const m = b[i++]!;
    if (m >> 6 !== 3) throw new Error('mov sreg: memory operand');
    text = `mov ${SREG[(m >> 3) & 7]}, ${REG16[m & 7]}`;
  } else if (op >= 0xb8 && op <= 0xbf) text = o32 ? `mov ${REG32[op - 0xb8]}, ${hex(u32())}` : `mov ${REG16[op - 0xb8]}, ${hex(u16())}`;
  else if (op >= 0xb0 && op <= 0xb7) text = `mov ${REG8[op - 0xb0]}, ${hex(b[i++]!)}`;
  else if (op >= 0x48 && op <= 0x4f) text = `dec ${(o32 ? REG32 : REG16)[op - 0x48]}`;
  else if (op === 0x75) text = `jnz ${hex(rel8())}`;
  else if (op === 0xeb) text = `jmp ${hex(rel8())}`;
  else if (op === 0xe6) text = `out ${hex(b[i++]!)}, al`;
  else if (op === 0xcd) text = `int ${hex(b[i++]!)}`;
  else if (op === 0xc7) {
    const m = b[i++]!;
    if (m !== 0x06) throw new Error('mov r/m imm: only [disp16] expected');
    const addr = u16();
    text = o32 ? `mov dword [${hex(addr)}], ${hex(u32())}` : `mov word [${hex(addr)}], ${hex(u16())}`;
  } else throw new Error(`unexpected opcode ${hex(op)} at ${hex(at)}`);
  return { at, text, next: i };
}

function disassemble(b: Buffer, from: number, to: number): Insn[] {
  const out: Insn[] = [];
  for (let at = from; at < to; ) {
    const insn = decode(b, at);
    out.push(insn);
    at = insn.next;
  }
  return out;
}

describe('probe boot sector', () => {
  const sector = buildProbeBootSector();

  it('is one 512-byte sector ending in the 55 AA boot signature', () => {
    expect(sector.length).toBe(512);
    expect(BOOT_SECTOR_SIZE).toBe(512);
    expect(sector[510]).toBe(0x55);
    expect(sector[511]).toBe(0xaa);
  });

  it('decodes to the intended program', () => {
    const code = disassemble(sector, 0, PROBE_LAYOUT.end);
    const done = Buffer.from('DONE', 'ascii').readUInt32LE(0);
    expect(code.map((c) => `${hex(c.at)} ${c.text}`)).toEqual([
      '0x0 cli',
      '0x1 xor ax, ax',
      '0x3 mov ss, ax',
      '0x5 mov sp, 0x7c00',
      '0x8 mov ds, ax',
      '0xa mov es, ax',
      `0xc mov ecx, ${hex(PROBE_ITERATIONS)}`,
      '0x12 dec ecx',
      '0x14 jnz 0x12',
      `0x16 mov dword [0x7c40], ${hex(done)}`,
      '0x1f mov ax, 0x301',
      '0x22 mov cx, 0x2',
      '0x25 mov dh, 0x0',
      '0x27 mov bx, 0x7c00',
      '0x2a sti',
      '0x2b int 0x13',
      '0x2d cli',
      '0x2e mov al, 0x0',
      '0x30 out 0xf4, al',
      '0x32 hlt',
      '0x33 jmp 0x32',
    ]);
    // the offsets the module documents are where the instructions really start
    const starts = new Set(code.map((c) => c.at));
    for (const [name, off] of Object.entries(PROBE_LAYOUT)) if (name !== 'end') expect(starts.has(off), name).toBe(true);
  });

  it('loops with a 32-bit counter (operand-size prefix) and exits through isa-debug-exit', () => {
    expect([...sector.subarray(PROBE_LAYOUT.movEcx, PROBE_LAYOUT.movEcx + 2)]).toEqual([0x66, 0xb9]);
    expect(sector.readUInt32LE(PROBE_LAYOUT.movEcx + 2)).toBe(PROBE_ITERATIONS);
    expect([...sector.subarray(PROBE_LAYOUT.loop, PROBE_LAYOUT.loop + 4)]).toEqual([0x66, 0x49, 0x75, 0xfc]);
    expect([...sector.subarray(PROBE_LAYOUT.movAl, PROBE_LAYOUT.movAl + 4)]).toEqual([0xb0, 0x00, 0xe6, DEBUG_EXIT_PORT]);
    expect(DEBUG_EXIT_PORT).toBe(0xf4);
    // a loop long enough to measure (TCG: a fraction of a second), short enough for KVM to be instant
    expect(PROBE_ITERATIONS).toBeGreaterThanOrEqual(50_000_000);
    expect(PROBE_ITERATIONS).toBeLessThanOrEqual(1_000_000_000);
  });

  it('keeps its data out of the code and everything else zero', () => {
    expect(sector.subarray(PROBE_LAYOUT.end, PROOF_OFFSET).every((x) => x === 0)).toBe(true);
    expect(sector.readUInt32LE(PROOF_OFFSET)).toBe(0); // the proof slot is filled only at run time
    expect(sector.toString('ascii', 0x60, 0x60 + 20)).toBe('vmctl accel probe v1');
    expect(sector.subarray(0x60 + 20, 510).every((x) => x === 0)).toBe(true);
  });

  it('encodes other loop counts little-endian and rejects impossible ones', () => {
    expect(buildProbeBootSector(0x12345678).readUInt32LE(PROBE_LAYOUT.movEcx + 2)).toBe(0x12345678);
    expect(buildProbeBootSector(1).readUInt32LE(PROBE_LAYOUT.movEcx + 2)).toBe(1);
    expect(() => buildProbeBootSector(0)).toThrow(RangeError);
    expect(() => buildProbeBootSector(2 ** 32)).toThrow(RangeError);
    expect(() => buildProbeBootSector(1.5)).toThrow(RangeError);
  });

  it('the probe disk is the sector plus an empty proof sector; hasProof accepts only the guest-written copy', () => {
    const disk = buildProbeDisk();
    expect(disk.length).toBe(PROBE_DISK_SIZE);
    expect(disk.subarray(0, 512).equals(sector)).toBe(true);
    expect(disk.subarray(512).every((x) => x === 0)).toBe(true);
    expect(hasProof(disk.subarray(512), sector)).toBe(false);
    const written = Buffer.from(sector);
    written.write('DONE', PROOF_OFFSET, 'ascii');
    expect(hasProof(written, sector)).toBe(true);
    expect(hasProof(sector, sector)).toBe(false); // the unmodified sector is no proof
    const other = Buffer.from(written);
    other.writeUInt8(other.readUInt8(PROBE_LAYOUT.movEcx + 2) ^ 1, PROBE_LAYOUT.movEcx + 2); // another image's code
    expect(hasProof(other, sector)).toBe(false);
  });
});
