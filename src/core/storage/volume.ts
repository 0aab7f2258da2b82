/**
 * The one place for the names of the volumes vmctl puts in its pool and for
 * the XML it creates them with.
 *
 * Names:
 *
 *   <vm>-<disk>.qcow2 | <vm>-<disk>.img   a VM's disk (an overlay on its base image, or empty)
 *   <vm>-seed.iso                         a VM's cloud-init NoCloud seed
 *   img_NAME.qcow2 | img_NAME.raw         a base image's disk (exactly one of the two)
 *   img_NAME.vmlinuz, img_NAME.initrd     its kernel and initrd (direct-kernel images only)
 *   img_NAME.manifest.json                its manifest (written last: "exists" means "complete")
 *
 * The `img_` prefix cannot collide with a VM volume: VM names only contain
 * [a-z0-9-], never '_'. The image suffixes are fixed and none is a suffix of
 * another, so a volume name maps back to exactly one (image, kind).
 *
 * XML: every volume is created with mode 0600 (libvirt's own default), owned by
 * the daemon's user. Guest disks hold whatever the guest writes and the seed
 * holds the guest's SSH host private key, so no other local user may read
 * them; QEMU still can, because libvirt's DAC driver hands each file of a
 * domain (disk, backing chain, kernel, initrd, cdrom) to the QEMU user when the
 * domain starts and back when it stops.
 */
import { xmlBuilder, xmlParser } from '../xml.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Connection } from '../../libvirt/connection.js';
import { VmctlError } from '../errors.js';
import { assertDiskName, assertImageName, assertVmName, IMAGE_NAME_RE } from '../names.js';

/** The file mode of every volume vmctl creates. */
export const VOLUME_MODE = '0600';

export type VolumeFormat = 'qcow2' | 'raw';

// ---------------------------------------------------------------------------------------------
// per-VM volumes
// ---------------------------------------------------------------------------------------------

/** The volume vmctl creates for one disk of a VM: `<vm>-<disk>.qcow2`, or `<vm>-<disk>.img` for raw. */
export function diskVolumeName(vmName: string, diskName: string, format: VolumeFormat): string {
  assertVmName(vmName);
  assertDiskName(diskName);
  return `${vmName}-${diskName}.${format === 'qcow2' ? 'qcow2' : 'img'}`;
}

/** The cloud-init NoCloud seed ISO of a VM: `<vm>-seed.iso`. */
export function seedVolumeName(vmName: string): string {
  assertVmName(vmName);
  return `${vmName}-seed.iso`;
}

// ---------------------------------------------------------------------------------------------
// image volumes
// ---------------------------------------------------------------------------------------------

export const IMAGE_VOLUME_PREFIX = 'img_';
export type ImageVolumeKind = 'disk' | 'kernel' | 'initrd' | 'manifest';

export interface ImageVolumeNames {
  disk: string;
  kernel: string;
  initrd: string;
  manifest: string;
}

/** The volume names of image `name` (its disk volume depends on the format). */
export function imageVolumeNames(name: string, format: VolumeFormat): ImageVolumeNames {
  assertImageName(name);
  return {
    disk: `${IMAGE_VOLUME_PREFIX}${name}.${format}`,
    kernel: `${IMAGE_VOLUME_PREFIX}${name}.vmlinuz`,
    initrd: `${IMAGE_VOLUME_PREFIX}${name}.initrd`,
    manifest: `${IMAGE_VOLUME_PREFIX}${name}.manifest.json`,
  };
}

const SUFFIXES: ReadonlyArray<readonly [string, ImageVolumeKind, VolumeFormat | undefined]> = [
  ['.manifest.json', 'manifest', undefined],
  ['.vmlinuz', 'kernel', undefined],
  ['.initrd', 'initrd', undefined],
  ['.qcow2', 'disk', 'qcow2'],
  ['.raw', 'disk', 'raw'],
];

/** Which image a volume belongs to, or null for volumes that are not image volumes. */
export function parseImageVolumeName(volume: string): { name: string; kind: ImageVolumeKind; format?: VolumeFormat } | null {
  if (!volume.startsWith(IMAGE_VOLUME_PREFIX)) return null;
  const rest = volume.slice(IMAGE_VOLUME_PREFIX.length);
  for (const [suffix, kind, format] of SUFFIXES) {
    if (!rest.endsWith(suffix)) continue;
    const name = rest.slice(0, -suffix.length);
    if (!IMAGE_NAME_RE.test(name)) return null;
    return format ? { name, kind, format } : { name, kind };
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// volume XML
// ---------------------------------------------------------------------------------------------

export interface VolumeSpec {
  name: string;
  /** the size a guest sees (raw: the file's length) */
  capacityBytes: number;
  format: VolumeFormat;
  /** a qcow2 overlay's backing file */
  backing?: { path: string; format: string };
}

/**
 * The XML to create a file volume: sparse (allocation 0), mode 0600, with an
 * optional backing store (qcow2 overlays).
 */
export function volumeXml(spec: VolumeSpec): string {
  if (!Number.isSafeInteger(spec.capacityBytes) || spec.capacityBytes < 0) {
    throw new VmctlError('INTERNAL', `invalid capacity ${spec.capacityBytes} for volume ${spec.name}`);
  }
  return xmlBuilder.build({
    volume: {
      '@_type': 'file',
      name: spec.name,
      capacity: { '@_unit': 'bytes', '#text': String(spec.capacityBytes) },
      allocation: { '@_unit': 'bytes', '#text': '0' },
      // qcow2 v3 (compat 1.1): only it can hold the dirty bitmaps incremental backups need
      target: { format: { '@_type': spec.format }, ...(spec.format === 'qcow2' ? { compat: '1.1' } : {}), permissions: { mode: VOLUME_MODE } },
      ...(spec.backing ? { backingStore: { path: spec.backing.path, format: { '@_type': spec.backing.format } } } : {}),
    },
  }) as string;
}

type XmlNode = Record<string, unknown>;

function textOf(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as XmlNode)['#text'] === 'string') return (v as XmlNode)['#text'] as string;
  return undefined;
}

function bytesOf(v: unknown): number {
  const t = textOf(v);
  if (t === undefined || !/^\d+$/.test(t.trim())) return 0;
  const unit = v && typeof v === 'object' ? (v as XmlNode)['@_unit'] : undefined;
  if (unit !== undefined && unit !== 'bytes' && unit !== 'B' && unit !== 'b') {
    throw new VmctlError('INTERNAL', `unexpected size unit ${String(unit)} in volume XML`);
  }
  return Number(t.trim());
}

export interface VolumeDetails {
  name: string;
  path: string;
  format: string;
  capacity: number;
  allocation: number;
  physical: number;
  /** the file mode libvirt reports, e.g. '0600' */
  mode?: string;
  backingPath?: string;
}

/** What a volume's XML (virStorageVolGetXMLDesc) says about it. */
export function parseVolumeXml(xml: string): VolumeDetails {
  const vol = ((xmlParser.parse(xml) as XmlNode).volume ?? {}) as XmlNode;
  const target = (vol.target ?? {}) as XmlNode;
  const backing = vol.backingStore as XmlNode | undefined;
  const backingPath = backing ? textOf(backing.path) : undefined;
  const mode = textOf(((target.permissions ?? {}) as XmlNode).mode);
  const capacity = bytesOf(vol.capacity);
  const physical = bytesOf(vol.physical);
  return {
    name: textOf(vol.name) ?? '',
    path: textOf(target.path) ?? '',
    format: String(((target.format ?? {}) as XmlNode)['@_type'] ?? 'raw'),
    capacity,
    allocation: bytesOf(vol.allocation),
    physical: physical || capacity,
    ...(mode ? { mode } : {}),
    ...(backingPath ? { backingPath } : {}),
  };
}

/** Delete a volume by pool and name (an undo, a cleanup); false when it was not there. */
export async function deleteVolumeIfThere(conn: Connection, poolName: string, volName: string): Promise<boolean> {
  try {
    await (await (await conn.lookupStoragePool(poolName)).lookupVolume(volName)).delete();
    return true;
  } catch (e) {
    if (e instanceof LibvirtError && e.isNotFound()) return false;
    throw e;
  }
}

/** Delete the pool volume at `path`; false when no pool has it. */
export async function deleteVolumeAtIfThere(conn: Connection, path: string): Promise<boolean> {
  try {
    await (await conn.lookupStorageVolumeByPath(path)).delete();
    return true;
  } catch (e) {
    if (e instanceof LibvirtError && e.isNotFound()) return false;
    throw e;
  }
}
