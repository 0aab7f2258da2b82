/** src/core/storage/volume.ts: the names of every volume vmctl makes, and the XML it makes them with. */
import { XMLParser } from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';
import { VmctlError } from '../../src/core/errors.js';
import {
  diskVolumeName,
  imageVolumeNames,
  parseImageVolumeName,
  parseVolumeXml,
  seedVolumeName,
  VOLUME_MODE,
  volumeXml,
} from '../../src/core/storage/volume.js';

const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@_', parseTagValue: false });
type Node = Record<string, unknown>;
const parse = (xml: string) => (parser.parse(xml) as { volume: Node }).volume;

describe('per-VM volume names', () => {
  it('derive from validated VM and disk names', () => {
    expect(diskVolumeName('web', 'root', 'qcow2')).toBe('web-root.qcow2');
    expect(diskVolumeName('web', 'data', 'raw')).toBe('web-data.img');
    expect(seedVolumeName('web')).toBe('web-seed.iso');
    for (const bad of [() => diskVolumeName('../x', 'root', 'qcow2'), () => diskVolumeName('web', '../root', 'qcow2'), () => seedVolumeName('Web_1')]) {
      expect(bad).toThrow(VmctlError);
    }
  });

  it('are never taken for image volumes (VM names have no "_")', () => {
    for (const n of [diskVolumeName('img', 'root', 'qcow2'), diskVolumeName('img', 'raw', 'raw'), seedVolumeName('img')]) {
      expect(parseImageVolumeName(n)).toBeNull();
    }
  });
});

describe('image volume names', () => {
  it('map back to exactly one (image, kind)', () => {
    const q = imageVolumeNames('debian-12', 'qcow2');
    expect(q).toEqual({ disk: 'img_debian-12.qcow2', kernel: 'img_debian-12.vmlinuz', initrd: 'img_debian-12.initrd', manifest: 'img_debian-12.manifest.json' });
    expect(imageVolumeNames('x', 'raw').disk).toBe('img_x.raw');
    expect(parseImageVolumeName(q.disk)).toEqual({ name: 'debian-12', kind: 'disk', format: 'qcow2' });
    expect(parseImageVolumeName(q.kernel)).toEqual({ name: 'debian-12', kind: 'kernel' });
    expect(parseImageVolumeName(q.initrd)).toEqual({ name: 'debian-12', kind: 'initrd' });
    expect(parseImageVolumeName(q.manifest)).toEqual({ name: 'debian-12', kind: 'manifest' });
    expect(parseImageVolumeName('img_a.iso')).toBeNull();
    expect(() => imageVolumeNames('../x', 'raw')).toThrow(VmctlError);
  });
});

describe('volumeXml', () => {
  it('makes every volume 0600 and sparse', () => {
    expect(VOLUME_MODE).toBe('0600');
    for (const format of ['qcow2', 'raw'] as const) {
      const v = parse(volumeXml({ name: `web-root.${format}`, capacityBytes: 3 * 2 ** 30, format }));
      expect(v).toEqual({
        '@_type': 'file',
        name: `web-root.${format}`,
        capacity: { '@_unit': 'bytes', '#text': String(3 * 2 ** 30) },
        allocation: { '@_unit': 'bytes', '#text': '0' },
        // qcow2 v3: dirty bitmaps (incremental backups) need it
        target: { format: { '@_type': format }, ...(format === 'qcow2' ? { compat: '1.1' } : {}), permissions: { mode: '0600' } },
      });
    }
  });

  it('adds the backing store of an overlay', () => {
    const v = parse(volumeXml({ name: 'web-root.qcow2', capacityBytes: 1024, format: 'qcow2', backing: { path: '/var/lib/vmctl/images/img_debian-12.qcow2', format: 'qcow2' } }));
    expect(v.backingStore).toEqual({ path: '/var/lib/vmctl/images/img_debian-12.qcow2', format: { '@_type': 'qcow2' } });
    expect((v.target as Node).permissions).toEqual({ mode: '0600' });
  });

  it('escapes what it is given and refuses impossible sizes', () => {
    const xml = volumeXml({ name: 'a<b>&"c', capacityBytes: 1, format: 'raw', backing: { path: "/p/x'<y>", format: 'raw' } });
    expect(xml).not.toContain('a<b>');
    expect(parse(xml).name).toBe('a<b>&"c');
    expect((parse(xml).backingStore as Node).path).toBe("/p/x'<y>");
    expect(() => volumeXml({ name: 'x', capacityBytes: -1, format: 'raw' })).toThrow(VmctlError);
    expect(() => volumeXml({ name: 'x', capacityBytes: 1.5, format: 'raw' })).toThrow(VmctlError);
  });

  it('round-trips through parseVolumeXml, mode included', () => {
    // what libvirt answers for a volume vmctl made (virsh vol-dumpxml)
    const d = parseVolumeXml(`<volume type='file'><name>web-seed.iso</name><capacity unit='bytes'>374784</capacity>
      <allocation unit='bytes'>376832</allocation><physical unit='bytes'>374784</physical>
      <target><path>/var/lib/vmctl/images/web-seed.iso</path><format type='raw'/>
      <permissions><mode>0600</mode><owner>0</owner><group>0</group></permissions></target></volume>`);
    expect(d).toEqual({ name: 'web-seed.iso', path: '/var/lib/vmctl/images/web-seed.iso', format: 'raw', capacity: 374784, allocation: 376832, physical: 374784, mode: '0600' });
    const mine = parseVolumeXml(volumeXml({ name: 'web-seed.iso', capacityBytes: 374784, format: 'raw' }));
    expect(mine).toMatchObject({ name: 'web-seed.iso', format: 'raw', capacity: 374784, allocation: 0, mode: '0600' });
  });
});
