/** What of a domain's XML a backup needs: its disks, boot files and seed; and the vmctl names of backup objects. */
import { xmlParserWith } from '../xml.js';

type XmlNode = Record<string, unknown>;

export interface DomainDisk {
  target: string;
  device: 'disk' | 'cdrom' | 'floppy' | 'lun';
  type: string;
  source?: string;
  format: string;
  readonly: boolean;
}

export interface DomainFiles {
  disks: DomainDisk[];
  kernel?: string;
  initrd?: string;
}

const parser = xmlParserWith((name) => ['disk', 'interface', 'qemu:arg', 'arg'].includes(name));

export function domainFiles(xml: string): DomainFiles {
  const doc = parser.parse(xml) as { domain?: XmlNode };
  const d = doc.domain ?? {};
  const devices = (d.devices ?? {}) as XmlNode;
  const disks = ((devices.disk ?? []) as XmlNode[]).map((x): DomainDisk => {
    const src = (x.source ?? {}) as XmlNode;
    const drv = (x.driver ?? {}) as XmlNode;
    const tgt = (x.target ?? {}) as XmlNode;
    const file = src['@_file'] ?? src['@_dev'];
    return {
      target: String(tgt['@_dev'] ?? ''),
      device: (x['@_device'] as DomainDisk['device']) ?? 'disk',
      type: String(x['@_type'] ?? 'file'),
      ...(typeof file === 'string' ? { source: file } : {}),
      format: String(drv['@_type'] ?? 'raw'),
      readonly: x.readonly !== undefined,
    };
  });
  const os = (d.os ?? {}) as XmlNode;
  const text = (v: unknown) => (typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as XmlNode)['#text'] === 'string' ? ((v as XmlNode)['#text'] as string) : undefined);
  const kernel = text(os.kernel);
  const initrd = text(os.initrd);
  return { disks, ...(kernel ? { kernel } : {}), ...(initrd ? { initrd } : {}) };
}

/** Disks whose contents are backed up: writable file disks. */
export function dataDisks(f: DomainFiles): DomainDisk[] {
  return f.disks.filter((d) => d.device === 'disk' && d.type === 'file' && d.source && !d.readonly);
}

/** The cloud-init seed: a read-only cdrom vmctl attached. */
export function seedDisk(f: DomainFiles): DomainDisk | undefined {
  return f.disks.find((d) => d.device === 'cdrom' && d.source);
}

/** Checkpoints vmctl creates are named vmctl-bak-<point id>; others are left alone. */
export const CHECKPOINT_PREFIX = 'vmctl-bak-';

export function checkpointName(pointId: string): string {
  return `${CHECKPOINT_PREFIX}${pointId.toLowerCase()}`;
}

/** Scratch volumes in vmctl's pool that a push-mode backup writes into. */
export function scratchVolumeName(vm: string, target: string, opId: string): string {
  return `vmctl-bak-${vm}-${target}-${opId.slice(0, 8)}.qcow2`;
}
