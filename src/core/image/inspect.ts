/**
 * Looking at images without libvirt: format detection from a file's first
 * bytes, build manifests (scripts/build-image.sh's FILE.json), and the files a
 * domain's XML references.
 */
import { open } from 'node:fs/promises';
import { xmlParser } from '../xml.js';
import { VmctlError } from '../errors.js';
import { quote, XML_ILLEGAL_RE } from '../names.js';
import type { ImageFormat, ImageManifest } from './types.js';

type XmlNode = Record<string, unknown>;

/** Every file a domain's XML references (disk sources, backing chains, kernel, initrd, loader…). */
export function domainFileReferences(xml: string): Set<string> {
  const found = new Set<string>();
  const walk = (node: unknown, key: string): void => {
    if (Array.isArray(node)) {
      for (const n of node) walk(n, key);
      return;
    }
    if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node as XmlNode)) {
        if (k === '@_file' && typeof v === 'string') found.add(v);
        else walk(v, k);
      }
      return;
    }
    if ((key === 'kernel' || key === 'initrd') && typeof node === 'string') found.add(node.trim());
  };
  walk(xmlParser.parse(xml), '');
  return found;
}

// ---------------------------------------------------------------------------------------------
// format detection
// ---------------------------------------------------------------------------------------------

export interface HeaderInspection {
  format: ImageFormat;
  /** qcow2 only: the guest-visible size from the header */
  virtualSize?: number;
}

const FOREIGN_MAGICS: ReadonlyArray<readonly [number, Buffer, string, 'image' | 'compressed']> = [
  [0, Buffer.from('KDMV'), 'a VMDK image', 'image'],
  [0, Buffer.from('# Disk DescriptorFile'), 'a VMDK descriptor', 'image'],
  [0, Buffer.from('vhdxfile'), 'a VHDX image', 'image'],
  [0, Buffer.from('conectix'), 'a VHD (vpc) image', 'image'],
  [0x40, Buffer.from([0x7f, 0x10, 0xda, 0xbe]), 'a VirtualBox VDI image', 'image'],
  [0, Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]), 'a LUKS-encrypted image', 'image'],
  [0, Buffer.from([0x1f, 0x8b]), 'gzip-compressed', 'compressed'],
  [0, Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), 'xz-compressed', 'compressed'],
  [0, Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), 'zstd-compressed', 'compressed'],
  [0, Buffer.from('BZh'), 'bzip2-compressed', 'compressed'],
];

/**
 * Detects qcow2 (by its magic) or raw from the first bytes of a file (64 KiB is
 * plenty), and refuses what vmctl cannot use as a base image: qcow2 with a
 * backing file or an external data file, encrypted, corrupt or dirty qcow2,
 * qcow v1, other image formats, compressed files.
 */
export function inspectImageHeader(head: Buffer, fileSize: number, what = 'the image'): HeaderInspection {
  if (head.length >= 4 && head.subarray(0, 4).equals(Buffer.from([0x51, 0x46, 0x49, 0xfb]))) {
    if (head.length < 72) throw new VmctlError('INVALID_INPUT', `${what} has a truncated qcow2 header`);
    const version = head.readUInt32BE(4);
    if (version !== 2 && version !== 3) {
      throw new VmctlError('UNSUPPORTED', `${what} is qcow version ${version}; vmctl imports qcow2 (versions 2 and 3) or raw`, {
        hint: 'convert it: qemu-img convert -O qcow2 FILE NEW.qcow2',
      });
    }
    const backingOffset = head.readBigUInt64BE(8);
    if (backingOffset !== 0n) {
      const len = head.readUInt32BE(16);
      const off = Number(backingOffset);
      const backing = off + len <= head.length && len <= 1023 ? head.subarray(off, off + len).toString('utf8') : undefined;
      throw new VmctlError('INVALID_INPUT', `${what} is a qcow2 overlay with a backing file${backing !== undefined ? ` (${quote(backing)})` : ''}; a base image must be self-contained`, {
        hint: 'flatten it first: qemu-img convert -O qcow2 FILE NEW.qcow2',
      });
    }
    if (head.readUInt32BE(32) !== 0) {
      throw new VmctlError('UNSUPPORTED', `${what} is an encrypted qcow2 image`, { hint: 'decrypt it with qemu-img convert first' });
    }
    if (version === 3 && head.length >= 80) {
      const incompatible = head.readBigUInt64BE(72);
      if (incompatible & 1n) {
        throw new VmctlError('INVALID_INPUT', `${what} is a dirty qcow2 image (not cleanly closed)`, { hint: 'repair it: qemu-img check -r all FILE' });
      }
      if (incompatible & 2n) {
        throw new VmctlError('INVALID_INPUT', `${what} is marked corrupt`, { hint: 'repair it: qemu-img check -r all FILE' });
      }
      if (incompatible & 4n) {
        throw new VmctlError('INVALID_INPUT', `${what} keeps its data in an external data file; a base image must be self-contained`, {
          hint: 'convert it: qemu-img convert -O qcow2 FILE NEW.qcow2',
        });
      }
    }
    const virtualSize = head.readBigUInt64BE(24);
    if (virtualSize === 0n || virtualSize > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new VmctlError('INVALID_INPUT', `${what} has an invalid qcow2 virtual size (${virtualSize})`);
    }
    return { format: 'qcow2', virtualSize: Number(virtualSize) };
  }
  if (head.length >= 4 && head.subarray(0, 3).toString('latin1') === 'QFI') {
    throw new VmctlError('UNSUPPORTED', `${what} is not a qcow2 image vmctl understands`);
  }
  for (const [offset, magic, desc, kind] of FOREIGN_MAGICS) {
    if (head.length >= offset + magic.length && head.subarray(offset, offset + magic.length).equals(magic)) {
      throw new VmctlError('UNSUPPORTED', `${what} is ${desc}; vmctl imports qcow2 or raw disk images`, {
        hint: kind === 'compressed' ? 'decompress it first' : 'convert it: qemu-img convert -O qcow2 FILE NEW.qcow2',
      });
    }
  }
  if (fileSize === 0) throw new VmctlError('INVALID_INPUT', `${what} is empty`);
  return { format: 'raw' };
}

export async function readHead(path: string, n = 65536): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// manifests
// ---------------------------------------------------------------------------------------------

const SHA256_RE = /^[0-9a-f]{64}$/;
const PLAIN_FILE_RE = /^[A-Za-z0-9._+-]{1,255}$/;
export const MAX_MANIFEST_BYTES = 1024 * 1024;

export function normalizeSha256(value: string, what = '--sha256'): string {
  const v = value.trim().toLowerCase();
  if (!SHA256_RE.test(v)) throw new VmctlError('INVALID_INPUT', `${what} must be 64 hexadecimal digits, got ${quote(value)}`);
  return v;
}

function plainFile(v: unknown, what: string, where: string): string {
  if (typeof v !== 'string' || !PLAIN_FILE_RE.test(v) || v === '.' || v === '..') {
    throw new VmctlError('INVALID_INPUT', `${where}: ${what} must be a plain file name next to the manifest, got ${quote(String(v))}`);
  }
  return v;
}

function optionalSha(v: unknown, what: string, where: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !SHA256_RE.test(v)) throw new VmctlError('INVALID_INPUT', `${where}: ${what} is not a sha256`);
  return v;
}

/** Parses and checks a build manifest (scripts/build-image.sh's FILE.json). */
export function parseBuildManifest(text: string, where: string): ImageManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new VmctlError('INVALID_INPUT', `${where} is not valid JSON: ${(e as Error).message}`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new VmctlError('INVALID_INPUT', `${where} is not a JSON object`);
  const m = raw as Record<string, unknown>;
  if (m.manifestVersion !== 1) {
    throw new VmctlError('UNSUPPORTED', `${where}: manifestVersion ${JSON.stringify(m.manifestVersion)} is not supported (vmctl reads version 1)`);
  }
  if (m.format !== 'qcow2' && m.format !== 'raw') throw new VmctlError('INVALID_INPUT', `${where}: format must be "qcow2" or "raw"`);
  optionalSha(m.sha256, 'sha256', where);
  for (const k of ['virtualSize', 'fileSize'] as const) {
    if (m[k] !== undefined && !(Number.isSafeInteger(m[k]) && (m[k] as number) > 0)) throw new VmctlError('INVALID_INPUT', `${where}: ${k} is not a size`);
  }
  const boot = m.boot as Record<string, unknown> | undefined;
  if (!boot || typeof boot !== 'object') throw new VmctlError('INVALID_INPUT', `${where}: no "boot" section`);
  if (boot.method === 'direct-kernel') {
    plainFile(boot.kernel, 'boot.kernel', where);
    plainFile(boot.initrd, 'boot.initrd', where);
    if (typeof boot.cmdline !== 'string' || boot.cmdline.length > 4096 || XML_ILLEGAL_RE.test(boot.cmdline) || /[\r\n]/.test(boot.cmdline)) {
      throw new VmctlError('INVALID_INPUT', `${where}: boot.cmdline must be one line of text`);
    }
    optionalSha(boot.kernelSha256, 'boot.kernelSha256', where);
    optionalSha(boot.initrdSha256, 'boot.initrdSha256', where);
  } else if (boot.method !== 'bootloader') {
    throw new VmctlError('UNSUPPORTED', `${where}: boot.method ${JSON.stringify(boot.method)} is not supported (direct-kernel or bootloader)`);
  }
  return m as ImageManifest;
}
