/**
 * What migration needs to know about a guest, read from its domain XML: its
 * disks (path, format, target, read-only), the libvirt networks and pools it
 * uses, its CPU definition, the SSH forward's host port, domain type, memory.
 * And the one rewrite migration does on that XML (destination disk paths, a
 * re-picked forward port, the domain type), through the XML library.
 */
import { XMLBuilder } from 'fast-xml-parser';
import { metadataElement, xmlParserWith } from '../xml.js';
import { parseVmctlMetadata, sshForwardPort, VMCTL_XMLNS, withSshForwardPort, type VmctlVolumeRecord } from '../vm/domain-xml.js';

type XmlNode = Record<string, unknown>;
const ARRAYS = new Set(['disk', 'interface', 'qemu:arg', 'snapshot']);
const parser = xmlParserWith((name) => ARRAYS.has(name));
const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', format: true, suppressEmptyNode: true });

export interface GuestDisk {
  target: string;
  device: string;
  /** file or block path ('' for an empty cdrom) */
  path: string;
  /** <source pool vol> disks */
  pool?: string;
  volume?: string;
  format: string;
  readonly: boolean;
  cache?: string;
}

export interface GuestFacts {
  name: string;
  uuid: string;
  domainType: string;
  arch: string;
  machine: string;
  memoryKiB: number;
  disks: GuestDisk[];
  networks: string[];
  /** the <cpu> element as XML, when the guest names a model or mode */
  cpuXml?: string;
  cpuMode?: string;
  /** host port of the guest's SSH forward (hostfwd=tcp:127.0.0.1:PORT-:22) */
  sshPort?: number;
  /** direct kernel boot: the kernel and initrd files QEMU opens on the destination too */
  bootFiles?: { what: 'kernel' | 'initrd'; path: string }[];
  /** the volumes vmctl made for this VM (its metadata); undefined: not a VM vmctl created */
  vmctlVolumes?: VmctlVolumeRecord[];
}

const text = (v: unknown): string => (typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as XmlNode)['#text'] === 'string' ? ((v as XmlNode)['#text'] as string) : '');
const attr = (n: unknown, a: string): string | undefined => (n && typeof n === 'object' && typeof (n as XmlNode)[`@_${a}`] === 'string' ? ((n as XmlNode)[`@_${a}`] as string) : undefined);
const kib = (v: unknown): number => {
  const n = Number(text(v));
  const unit = attr(v, 'unit') ?? 'KiB';
  const f: Record<string, number> = { KiB: 1, k: 1, K: 1, MiB: 1024, M: 1024, GiB: 1024 * 1024, G: 1024 * 1024, b: 1 / 1024, bytes: 1 / 1024 };
  return Math.round(n * (f[unit] ?? 1));
};

/** Facts of a domain XML (or of the domain inside a snapshot's XML). */
export function guestFacts(domainXml: string): GuestFacts {
  // a domain, or a snapshot's (which carries the domain it was taken of)
  const doc = parser.parse(domainXml) as { domain?: XmlNode; domainsnapshot?: { domain?: XmlNode } };
  const d = doc.domain ?? doc.domainsnapshot?.domain ?? {};
  const devices = (d.devices ?? {}) as XmlNode;
  const os = (d.os ?? {}) as XmlNode;
  const disks: GuestDisk[] = ((devices.disk as XmlNode[] | undefined) ?? []).map((disk) => {
    const src = (disk.source ?? {}) as XmlNode;
    const drv = (disk.driver ?? {}) as XmlNode;
    const pool = attr(src, 'pool');
    const volume = attr(src, 'volume');
    return {
      target: attr(disk.target, 'dev') ?? '',
      device: attr(disk, 'device') ?? 'disk',
      path: attr(src, 'file') ?? attr(src, 'dev') ?? '',
      ...(pool ? { pool } : {}),
      ...(volume ? { volume } : {}),
      format: attr(drv, 'type') ?? 'raw',
      readonly: disk.readonly !== undefined,
      ...(attr(drv, 'cache') ? { cache: attr(drv, 'cache')! } : {}),
    };
  });
  const networks = ((devices.interface as XmlNode[] | undefined) ?? [])
    .filter((i) => attr(i, 'type') === 'network')
    .map((i) => attr(i.source, 'network') ?? '')
    .filter(Boolean);
  const cpu = d.cpu as XmlNode | undefined;
  const hasModel = cpu && (cpu.model !== undefined || attr(cpu, 'mode') !== undefined);
  const args = ((((d['qemu:commandline'] ?? {}) as XmlNode)['qemu:arg'] as XmlNode[] | undefined) ?? []).map((a) => attr(a, 'value') ?? '');
  const fwd = args.map(sshForwardPort).find((p) => p !== undefined);
  return {
    name: text(d.name),
    uuid: text(d.uuid),
    domainType: attr(d, 'type') ?? 'qemu',
    arch: attr(os.type, 'arch') ?? 'x86_64',
    machine: attr(os.type, 'machine') ?? '',
    memoryKiB: kib(d.memory),
    disks,
    networks: [...new Set(networks)],
    ...(hasModel ? { cpuXml: builder.build({ cpu }) as string, ...(attr(cpu, 'mode') ? { cpuMode: attr(cpu, 'mode')! } : {}) } : {}),
    ...(fwd !== undefined ? { sshPort: fwd } : {}),
    ...vmctlVolumesOf(domainXml, doc.domain !== undefined),
    ...(text(os.kernel) ? { bootFiles: (['kernel', 'initrd'] as const).filter((w) => text(os[w]) !== '').map((w) => ({ what: w, path: text(os[w]) })) } : {}),
  };
}

function vmctlVolumesOf(domainXml: string, isDomain: boolean): Pick<GuestFacts, 'vmctlVolumes'> {
  const meta = isDomain ? parseVmctlMetadata(domainXml) : null;
  return meta ? { vmctlVolumes: meta.volumes } : {};
}

export interface XmlRewrite {
  /** source path → destination path (disks, and a direct-kernel boot's kernel and initrd) */
  diskPaths?: ReadonlyMap<string, string>;
  /** volumes vmctl made for the guest on the destination, added to its vmctl metadata (delete removes them) */
  addVolumes?: { disk: string; pool: string; name: string; path: string }[];
  sshPort?: { from: number; to: number };
  domainType?: string;
}

/** The domain XML with disk paths, the SSH forward's port and/or the domain type changed. */
export function rewriteDomainXml(domainXml: string, r: XmlRewrite): string {
  const keep = xmlParserWith((name) => ARRAYS.has(name));
  const doc = keep.parse(domainXml) as { domain: XmlNode };
  const d = doc.domain;
  if (r.domainType) d['@_type'] = r.domainType;
  const devices = (d.devices ?? {}) as XmlNode;
  for (const disk of (devices.disk as XmlNode[] | undefined) ?? []) {
    const src = disk.source as XmlNode | undefined;
    if (!src || !r.diskPaths) continue;
    const path = attr(src, 'file');
    const to = path !== undefined ? r.diskPaths.get(path) : undefined;
    if (to !== undefined) src['@_file'] = to;
    // libvirt re-reads the backing chain on the destination
    delete disk.backingStore;
  }
  const os = (d.os ?? {}) as XmlNode;
  for (const w of ['kernel', 'initrd'] as const) {
    const to = r.diskPaths?.get(text(os[w]));
    if (to !== undefined) os[w] = to;
  }
  if (r.addVolumes && r.addVolumes.length > 0) addVmctlVolumes(d, r.addVolumes);
  if (r.sshPort) {
    const cl = d['qemu:commandline'] as XmlNode | undefined;
    for (const a of (cl?.['qemu:arg'] as XmlNode[] | undefined) ?? []) {
      const v = attr(a, 'value');
      if (v) a['@_value'] = withSshForwardPort(v, r.sshPort.from, r.sshPort.to);
    }
  }
  return builder.build(doc) as string;
}

/** Appends volume records to the domain's vmctl metadata element (matched by namespace, any prefix). */
function addVmctlVolumes(d: XmlNode, add: NonNullable<XmlRewrite['addVolumes']>): void {
  const el = metadataElement(d.metadata, VMCTL_XMLNS, 'vm');
  if (el) {
    const { node, p } = el;
    const vols = (node[`${p}volumes`] && typeof node[`${p}volumes`] === 'object' ? node[`${p}volumes`] : {}) as XmlNode;
    const have = vols[`${p}volume`];
    const list = (have === undefined ? [] : Array.isArray(have) ? have : [have]) as XmlNode[];
    const names = new Set(list.map((x) => `${String(x['@_pool'])}/${String(x['@_name'])}`));
    for (const a of add) {
      if (!names.has(`${a.pool}/${a.name}`)) list.push({ '@_role': 'disk', '@_disk': a.disk, '@_pool': a.pool, '@_name': a.name, '@_path': a.path });
    }
    vols[`${p}volume`] = list;
    node[`${p}volumes`] = vols;
  }
}

/** The disks that hold data and are migrated or must be shared (not empty cdroms, not read-only media). */
/** Read-only cdroms with a medium (the cloud-init seed): the destination's QEMU must open them too. */
export function mediaDisks(f: GuestFacts): GuestDisk[] {
  return [
    ...f.disks.filter((d) => d.readonly && d.device === 'cdrom' && d.path !== ''),
    // a direct-kernel image's kernel and initrd: files QEMU reads, like a medium
    ...(f.bootFiles ?? []).map((b) => ({ target: b.what, device: b.what, path: b.path, format: 'raw', readonly: true })),
  ];
}

export function dataDisks(f: GuestFacts): GuestDisk[] {
  return f.disks.filter((d) => (d.path !== '' || d.volume !== undefined) && !(d.readonly && d.device === 'cdrom'));
}
