/**
 * The accelerator probe's guest: a 512-byte x86 boot sector, assembled here by
 * hand (no assembler on the build path, and the bytes are few enough to check
 * one by one — test/unit/accel-bootsector.test.ts decodes them).
 *
 * The BIOS loads it at 0000:7C00 and jumps to it in 16-bit real mode with the
 * boot drive in DL. It counts a 32-bit register down from a fixed number (a
 * pure CPU loop: no memory traffic, no I/O, no interrupts), then leaves proof
 * that it got there — it stores "DONE" into its own in-memory copy and writes
 * that copy to the disk's second sector through the BIOS — and finally writes
 * 0 to I/O port 0xF4, where the probe domain has QEMU's `isa-debug-exit`
 * device: QEMU exits at once (status (0 << 1) | 1 = 1), libvirt sees the
 * domain stop, and the time from "create" to "gone" tells how fast this
 * accelerator runs guest code. The proof sector lets the probe tell "the guest
 * ran to the end" from "QEMU died early" ("probe, don't trust").
 *
 *   offset  bytes                       instruction
 *   0x00    FA                          cli                        ; nothing interrupts the loop
 *   0x01    31 C0                       xor ax, ax
 *   0x03    8E D0                       mov ss, ax                 ; stack below the sector: 0000:7C00
 *   0x05    BC 00 7C                    mov sp, 0x7C00
 *   0x08    8E D8                       mov ds, ax                 ; ds = es = 0: offsets are linear addresses
 *   0x0A    8E C0                       mov es, ax
 *   0x0C    66 B9 nn nn nn nn           mov ecx, ITERATIONS        ; 66 = operand-size prefix: 32-bit in real mode
 *   0x12    66 49                       dec ecx                    ; .loop
 *   0x14    75 FC                       jnz .loop                  ; rel8 -4: back to 0x12
 *   0x16    66 C7 06 40 7C 44 4F 4E 45  mov dword [0x7C40], "DONE" ; proof slot at sector offset 0x40
 *   0x1F    B8 01 03                    mov ax, 0x0301             ; int 13h AH=03 write, AL=1 sector
 *   0x22    B9 02 00                    mov cx, 0x0002             ; CH = cylinder 0, CL = sector 2 (1-based)
 *   0x25    B6 00                       mov dh, 0                  ; head 0; DL = boot drive, as the BIOS left it
 *   0x27    BB 00 7C                    mov bx, 0x7C00             ; ES:BX = this sector, as modified
 *   0x2A    FB                          sti                        ; the BIOS disk code may need interrupts
 *   0x2B    CD 13                       int 0x13
 *   0x2D    FA                          cli
 *   0x2E    B0 00                       mov al, 0
 *   0x30    E6 F4                       out 0xF4, al               ; isa-debug-exit: QEMU exits
 *   0x32    F4                          hlt                        ; .halt: only reached without the exit device
 *   0x33    EB FD                       jmp .halt                  ; rel8 -3: back to 0x32
 *   0x40    00 00 00 00                 proof slot ("DONE" in the copy written to sector 2)
 *   0x60    "vmctl accel probe v1"      data, never executed: names the image
 *   0x1FE   55 AA                       boot signature
 */

/**
 * Loop count. TCG runs `dec ecx; jnz` at roughly 0.5–1 G iterations per second
 * on current x86 hosts, so the loop takes ~0.2–0.5 s under TCG (on top of the
 * QEMU start and SeaBIOS); hardware KVM runs it in well under 0.1 s.
 */
export const PROBE_ITERATIONS = 200_000_000;

/** The I/O port the probe's `isa-debug-exit` device listens on. */
export const DEBUG_EXIT_PORT = 0xf4;

export const BOOT_SECTOR_SIZE = 512;
export const BOOT_SIGNATURE_OFFSET = 0x1fe;
/** Where the guest stores PROOF_MARKER (in memory; the BIOS then writes the sector to LBA 1). */
export const PROOF_OFFSET = 0x40;
export const PROOF_MARKER = 'DONE';
export const PROBE_IMAGE_TAG = 'vmctl accel probe v1';
export const PROBE_IMAGE_TAG_OFFSET = 0x60;
/** The probe disk: the boot sector, then the (zeroed) sector the guest writes its proof to. */
export const PROBE_DISK_SIZE = 2 * BOOT_SECTOR_SIZE;

/** Offsets of the instructions in the sector (see the table above). */
export const PROBE_LAYOUT = {
  cli: 0x00,
  xorAx: 0x01,
  movSs: 0x03,
  movSp: 0x05,
  movDs: 0x08,
  movEs: 0x0a,
  movEcx: 0x0c,
  loop: 0x12,
  jnz: 0x14,
  storeProof: 0x16,
  movAx: 0x1f,
  movCx: 0x22,
  movDh: 0x25,
  movBx: 0x27,
  sti: 0x2a,
  int13: 0x2b,
  cli2: 0x2d,
  movAl: 0x2e,
  out: 0x30,
  halt: 0x32,
  jmpHalt: 0x33,
  end: 0x35,
} as const;

const LOAD_ADDRESS = 0x7c00;

function le16(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff];
}

function le32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

/** Builds the probe's boot sector for a given loop count (1 … 2^32-1). */
export function buildProbeBootSector(iterations: number = PROBE_ITERATIONS): Buffer {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > 0xffff_ffff) {
    throw new RangeError(`iterations must be an integer in 1..${0xffff_ffff}, got ${iterations}`);
  }
  const proof = [...Buffer.from(PROOF_MARKER, 'ascii')];
  const code = Buffer.from([
    0xfa, //                                            0x00 cli
    0x31, 0xc0, //                                      0x01 xor ax, ax (31 /r, modrm 11 000 000)
    0x8e, 0xd0, //                                      0x03 mov ss, ax (8E /r, modrm 11 010(ss) 000(ax))
    0xbc, ...le16(LOAD_ADDRESS), //                     0x05 mov sp, 0x7C00 (B8+4)
    0x8e, 0xd8, //                                      0x08 mov ds, ax (modrm 11 011(ds) 000)
    0x8e, 0xc0, //                                      0x0A mov es, ax (modrm 11 000(es) 000)
    0x66, 0xb9, ...le32(iterations), //                 0x0C mov ecx, imm32 (o32 + B8+1)
    0x66, 0x49, //                                      0x12 dec ecx (o32 + 48+1)
    0x75, 0xfc, //                                      0x14 jnz rel8 -4 → 0x16 - 4 = 0x12
    0x66, 0xc7, 0x06, ...le16(LOAD_ADDRESS + PROOF_OFFSET), ...proof, // 0x16 mov dword [disp16], imm32 (o32 + C7 /0, modrm 00 000 110)
    0xb8, ...le16(0x0301), //                           0x1F mov ax, 0x0301 (AH=03h write sectors, AL=1)
    0xb9, ...le16(0x0002), //                           0x22 mov cx, 0x0002 (CH=0 cylinder, CL=2 sector)
    0xb6, 0x00, //                                      0x25 mov dh, 0 (B0+6)
    0xbb, ...le16(LOAD_ADDRESS), //                     0x27 mov bx, 0x7C00 (B8+3)
    0xfb, //                                            0x2A sti
    0xcd, 0x13, //                                      0x2B int 0x13
    0xfa, //                                            0x2D cli
    0xb0, 0x00, //                                      0x2E mov al, 0 (B0+0)
    0xe6, DEBUG_EXIT_PORT, //                           0x30 out imm8, al
    0xf4, //                                            0x32 hlt
    0xeb, 0xfd, //                                      0x33 jmp rel8 -3 → 0x35 - 3 = 0x32
  ]);
  if (code.length !== PROBE_LAYOUT.end) throw new Error('internal: probe boot sector layout changed');
  const sector = Buffer.alloc(BOOT_SECTOR_SIZE, 0);
  code.copy(sector, 0);
  sector.write(PROBE_IMAGE_TAG, PROBE_IMAGE_TAG_OFFSET, 'ascii');
  sector[BOOT_SIGNATURE_OFFSET] = 0x55;
  sector[BOOT_SIGNATURE_OFFSET + 1] = 0xaa;
  return sector;
}

/** The probe disk image: boot sector + an empty proof sector. */
export function buildProbeDisk(iterations: number = PROBE_ITERATIONS): Buffer {
  return Buffer.concat([buildProbeBootSector(iterations), Buffer.alloc(BOOT_SECTOR_SIZE, 0)]);
}

/**
 * Whether a disk's second sector holds the guest's proof: the boot sector as
 * it was in guest memory at the end, i.e. our own code with "DONE" stored.
 */
export function hasProof(secondSector: Buffer, bootSector: Buffer): boolean {
  if (secondSector.length < BOOT_SECTOR_SIZE || bootSector.length !== BOOT_SECTOR_SIZE) return false;
  const expected = Buffer.from(bootSector);
  expected.write(PROOF_MARKER, PROOF_OFFSET, 'ascii');
  return secondSector.subarray(0, BOOT_SECTOR_SIZE).equals(expected);
}
