/** Pure parts of src/core/images.ts: volume naming, header inspection, manifests, XML, build output. */
import { describe, expect, it } from 'vitest';
import { VmctlError } from '../../src/core/errors.js';
import {
  domainFileReferences,
  imageVolumeNames,
  inspectImageHeader,
  parseBuildLine,
  parseBuildManifest,
  parseImageVolumeName,
  parseVolumeXml,
} from '../../src/core/image/images.js';
import { diskVolumeName, seedVolumeName } from '../../src/core/storage/volume.js';
import { progressLine } from '../../src/cli/progress.js';

function qcow2Header(opts: { version?: number; backing?: string; size?: bigint; crypt?: number; incompatible?: bigint } = {}): Buffer {
  const h = Buffer.alloc(4096);
  h.write('QFI\xfb', 0, 'latin1');
  h.writeUInt32BE(opts.version ?? 3, 4);
  if (opts.backing) {
    h.writeBigUInt64BE(512n, 8);
    h.writeUInt32BE(opts.backing.length, 16);
    h.write(opts.backing, 512);
  }
  h.writeUInt32BE(16, 20);
  h.writeBigUInt64BE(opts.size ?? 64n * 1024n * 1024n, 24);
  h.writeUInt32BE(opts.crypt ?? 0, 32);
  h.writeBigUInt64BE(opts.incompatible ?? 0n, 72);
  return h;
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof VmctlError) return e.code;
    throw e;
  }
  return 'none';
}

describe('image volume names', () => {
  it('round-trip and never collide with VM volumes', () => {
    const n = imageVolumeNames('debian-12', 'qcow2');
    expect(n).toEqual({
      disk: 'img_debian-12.qcow2',
      kernel: 'img_debian-12.vmlinuz',
      initrd: 'img_debian-12.initrd',
      manifest: 'img_debian-12.manifest.json',
    });
    expect(parseImageVolumeName(n.disk)).toEqual({ name: 'debian-12', kind: 'disk', format: 'qcow2' });
    expect(parseImageVolumeName(n.manifest)).toEqual({ name: 'debian-12', kind: 'manifest' });
    expect(parseImageVolumeName('img_a.raw.qcow2')).toEqual({ name: 'a.raw', kind: 'disk', format: 'qcow2' });
    expect(parseImageVolumeName('img_x.manifest.json.raw')).toEqual({ name: 'x.manifest.json', kind: 'disk', format: 'raw' });
    // VM volumes: `<vm>-<disk>.qcow2`, `<vm>-seed.iso` — VM names have no '_'
    expect(parseImageVolumeName(diskVolumeName('img', 'root', 'qcow2'))).toBeNull();
    expect(parseImageVolumeName(seedVolumeName('img'))).toBeNull();
    expect(parseImageVolumeName('img_.qcow2')).toBeNull();
    expect(parseImageVolumeName('img_a.iso')).toBeNull();
    expect(code(() => imageVolumeNames('../x', 'raw'))).toBe('INVALID_INPUT');
  });
});

describe('inspectImageHeader', () => {
  it('detects qcow2 with its virtual size, raw otherwise', () => {
    expect(inspectImageHeader(qcow2Header({ size: 3n << 30n }), 200_000)).toEqual({ format: 'qcow2', virtualSize: 3 * 2 ** 30 });
    expect(inspectImageHeader(qcow2Header({ version: 2 }), 200_000).format).toBe('qcow2');
    expect(inspectImageHeader(Buffer.alloc(512, 0), 512)).toEqual({ format: 'raw' });
  });

  it('refuses overlays, encryption, dirty/corrupt/external-data qcow2, foreign and compressed files, empty files', () => {
    expect(() => inspectImageHeader(qcow2Header({ backing: '/var/lib/base.qcow2' }), 200_000)).toThrow(/backing file \("\/var\/lib\/base\.qcow2"\)/);
    expect(code(() => inspectImageHeader(qcow2Header({ version: 1 }), 200_000))).toBe('UNSUPPORTED');
    expect(code(() => inspectImageHeader(qcow2Header({ crypt: 1 }), 200_000))).toBe('UNSUPPORTED');
    expect(() => inspectImageHeader(qcow2Header({ incompatible: 1n }), 200_000)).toThrow(/dirty/);
    expect(() => inspectImageHeader(qcow2Header({ incompatible: 2n }), 200_000)).toThrow(/corrupt/);
    expect(() => inspectImageHeader(qcow2Header({ incompatible: 4n }), 200_000)).toThrow(/external data file/);
    expect(() => inspectImageHeader(Buffer.from('KDMV\x01\x00\x00\x00'), 8)).toThrow(/VMDK/);
    expect(() => inspectImageHeader(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1]), 7)).toThrow(/xz/);
    expect(code(() => inspectImageHeader(Buffer.alloc(0), 0))).toBe('INVALID_INPUT');
  });
});

describe('parseBuildManifest', () => {
  const good = {
    manifestVersion: 1,
    format: 'qcow2',
    sha256: 'a'.repeat(64),
    boot: { method: 'direct-kernel', kernel: 'x.vmlinuz', initrd: 'x.initrd', cmdline: 'root=/dev/vda1 ro', kernelSha256: 'b'.repeat(64) },
    extra: { kept: true },
  };
  it('accepts build-image.sh manifests and keeps unknown keys', () => {
    expect(parseBuildManifest(JSON.stringify(good), 'm')).toMatchObject({ boot: { method: 'direct-kernel' }, extra: { kept: true } });
    expect(parseBuildManifest(JSON.stringify({ manifestVersion: 1, format: 'raw', boot: { method: 'bootloader' } }), 'm').format).toBe('raw');
  });
  it('refuses paths outside the manifest directory, bad checksums, multi-line cmdlines, other versions', () => {
    const bad = (patch: Record<string, unknown>, boot: Record<string, unknown> = {}) =>
      code(() => parseBuildManifest(JSON.stringify({ ...good, ...patch, boot: { ...good.boot, ...boot } }), 'm'));
    expect(bad({}, { kernel: '../etc/passwd' })).toBe('INVALID_INPUT');
    expect(bad({}, { initrd: '/boot/initrd' })).toBe('INVALID_INPUT');
    expect(bad({}, { cmdline: 'a\nb' })).toBe('INVALID_INPUT');
    expect(bad({ sha256: 'nope' })).toBe('INVALID_INPUT');
    expect(bad({ format: 'vmdk' })).toBe('INVALID_INPUT');
    expect(bad({ manifestVersion: 2 })).toBe('UNSUPPORTED');
    expect(bad({}, { method: 'uefi' })).toBe('UNSUPPORTED');
    expect(code(() => parseBuildManifest('{', 'm'))).toBe('INVALID_INPUT');
  });
});

describe('XML helpers', () => {
  it('reads sizes and backing stores back from volume XML', () => {
    const d = parseVolumeXml(`<volume type='file'><name>vm-root.qcow2</name><capacity unit='bytes'>3221225472</capacity>
      <allocation unit='bytes'>200704</allocation><physical unit='bytes'>196624</physical>
      <target><path>/p/vm-root.qcow2</path><format type='qcow2'/></target>
      <backingStore><path>/p/img_debian-12.qcow2</path><format type='qcow2'/></backingStore></volume>`);
    expect(d).toEqual({
      name: 'vm-root.qcow2',
      path: '/p/vm-root.qcow2',
      format: 'qcow2',
      capacity: 3221225472,
      allocation: 200704,
      physical: 196624,
      backingPath: '/p/img_debian-12.qcow2',
    });
  });

  it('finds every file a domain references', () => {
    const refs = domainFileReferences(`<domain><os><kernel>/p/img_x.vmlinuz</kernel><initrd>/p/img_x.initrd</initrd></os>
      <devices><disk type='file'><source file='/p/vm-root.qcow2'/><backingStore type='file'><source file='/p/img_x.qcow2'/></backingStore></disk></devices></domain>`);
    expect([...refs].sort()).toEqual(['/p/img_x.initrd', '/p/img_x.qcow2', '/p/img_x.vmlinuz', '/p/vm-root.qcow2']);
  });
});

describe('build output and progress lines', () => {
  it('parses PROGRESS and RESULT lines', () => {
    expect(parseBuildLine('PROGRESS 46 apt: installing 9 packages')).toEqual({ kind: 'progress', percent: 46, message: 'apt: installing 9 packages' });
    expect(parseBuildLine('RESULT /x/debian-12.qcow2.json')).toEqual({ kind: 'result', path: '/x/debian-12.qcow2.json' });
    expect(parseBuildLine('[build-image] hello')).toBeNull();
  });
  it('renders transfer and build events for logs', () => {
    expect(
      progressLine({ phase: 'upload', image: 'debian-12', item: 'disk', done: 50 * 2 ** 20, total: 100 * 2 ** 20, bytesPerSecond: 25 * 2 ** 20, etaSeconds: 2, finished: false }),
    ).toBe('upload debian-12 disk: 50% 50 MiB of 100 MiB, 25 MiB/s, ETA 2s');
    expect(progressLine({ phase: 'build', image: 'debian-12', done: 46, total: 100, message: 'apt' })).toBe('build debian-12: 46% apt');
  });
});
