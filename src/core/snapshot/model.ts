/**
 * Snapshots as vmctl sees them: libvirt's snapshot XML read into a typed
 * model (kind, state, memory, each disk's layer), the XML vmctl asks for, and
 * the record of files vmctl's snapshot commands made on the host (external
 * overlays, memory images, overlays made by a revert), kept in the domain's
 * metadata so `vmctl delete` removes exactly those and nothing else.
 */
import { metadataElement, xmlBuilder, xmlParserWith } from '../xml.js';
import { VmctlError } from '../errors.js';
import type { Domain } from '../../libvirt/connection.js';
import { VirDomainModificationImpact } from '../../libvirt/generated/constants.gen.js';

export type SnapshotKind = 'internal' | 'external';

export interface SnapshotDisk {
  /** target device (vda, sda…) */
  name: string;
  snapshot: 'internal' | 'external' | 'no' | 'manual';
  /** external: the overlay made when the snapshot was taken (the disk's writes after it) */
  overlay?: string;
  /** external: the layer the disk was on at the snapshot (its content is the snapshot's state) */
  base?: string;
}

export interface SnapshotInfo {
  name: string;
  description?: string;
  /** the domain's state when taken: running, shutoff, disk-snapshot (disk-only of a running guest)… */
  state: string;
  createdAt: string;
  kind: SnapshotKind;
  memory: 'internal' | 'external' | 'no';
  memoryFile?: string;
  disks: SnapshotDisk[];
  parent?: string;
  /** the domain definition at the time (libvirt keeps it in the snapshot) */
  domainXml?: string;
}

type XmlNode = Record<string, unknown>;
const parser = xmlParserWith((name) => name === 'disk');
const asArray = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const attr = (n: XmlNode | undefined, a: string): string | undefined => {
  const v = n?.[`@_${a}`];
  return typeof v === 'string' ? v : undefined;
};
const text = (v: unknown): string | undefined => (typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as XmlNode)['#text'] === 'string' ? ((v as XmlNode)['#text'] as string) : undefined);

function diskSources(domain: XmlNode | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const d of asArray((domain?.devices as XmlNode | undefined)?.disk as XmlNode | XmlNode[] | undefined)) {
    const target = attr(d.target as XmlNode, 'dev');
    const file = attr(d.source as XmlNode, 'file');
    if (target && file) out.set(target, file);
  }
  return out;
}

/** The disks of a domain XML: target → source file. */
export function domainDiskSources(domainXml: string): Map<string, string> {
  return diskSources((parser.parse(domainXml) as { domain?: XmlNode }).domain);
}

export function parseSnapshotXml(xml: string): SnapshotInfo {
  const doc = parser.parse(xml) as { domainsnapshot?: XmlNode };
  const s = doc.domainsnapshot;
  if (!s) throw new VmctlError('LIBVIRT', 'libvirt returned a snapshot without <domainsnapshot>');
  const domain = s.domain as XmlNode | undefined;
  const before = diskSources(domain);
  const disks: SnapshotDisk[] = asArray((s.disks as XmlNode | undefined)?.disk as XmlNode | XmlNode[] | undefined).map((d) => {
    const kind = (attr(d, 'snapshot') ?? 'internal') as SnapshotDisk['snapshot'];
    const name = attr(d, 'name') ?? '?';
    const overlay = attr(d.source as XmlNode, 'file');
    const base = before.get(name);
    return { name, snapshot: kind, ...(kind === 'external' && overlay ? { overlay } : {}), ...(kind === 'external' && base ? { base } : {}) };
  });
  const mem = s.memory as XmlNode | undefined;
  const memory = (attr(mem, 'snapshot') ?? 'no') as SnapshotInfo['memory'];
  const created = Number(text(s.creationTime));
  const desc = text(s.description);
  const parentName = text((s.parent as XmlNode | undefined)?.name);
  // the domain definition inside, as its own document
  const domainStart = xml.indexOf('<domain ');
  const domainEnd = xml.lastIndexOf('</domain>');
  return {
    name: text(s.name) ?? '?',
    ...(desc ? { description: desc } : {}),
    state: text(s.state) ?? 'unknown',
    createdAt: Number.isFinite(created) ? new Date(created * 1000).toISOString() : '',
    kind: disks.some((d) => d.snapshot === 'external') || memory === 'external' ? 'external' : 'internal',
    memory,
    ...(memory === 'external' && attr(mem, 'file') ? { memoryFile: attr(mem, 'file')! } : {}),
    disks,
    ...(parentName ? { parent: parentName } : {}),
    ...(domainStart >= 0 && domainEnd > domainStart ? { domainXml: xml.slice(domainStart, domainEnd + '</domain>'.length) } : {}),
  };
}

// the domain definitions a snapshot carries (and QEMU's cookie) are left unparsed: the summary needs none of them
const summaryParser = xmlParserWith((name) => name === 'disk', ['domainsnapshot.domain', 'domainsnapshot.inactiveDomain', 'domainsnapshot.cookie']);

/** A snapshot's name and kind only: what create needs of every snapshot, without parsing the domain definitions inside. */
export function parseSnapshotSummary(xml: string): { name: string; kind: SnapshotKind } {
  const s = (summaryParser.parse(xml) as { domainsnapshot?: XmlNode }).domainsnapshot;
  if (!s) throw new VmctlError('LIBVIRT', 'libvirt returned a snapshot without <domainsnapshot>');
  const disks = asArray((s.disks as XmlNode | undefined)?.disk as XmlNode | XmlNode[] | undefined);
  const external = disks.some((d) => attr(d, 'snapshot') === 'external') || attr(s.memory as XmlNode | undefined, 'snapshot') === 'external';
  return { name: text(s.name) ?? '?', kind: external ? 'external' : 'internal' };
}

export interface SnapshotRequest {
  name: string;
  description?: string;
  kind: SnapshotKind;
  /** include the memory state (running guests) */
  memory: boolean;
  /** external memory image path on the host */
  memoryFile?: string;
  /** every disk of the domain: what to do with it */
  disks: { name: string; mode: 'internal' | 'external' | 'no'; overlay?: string }[];
}

/** The <domainsnapshot> vmctl asks libvirt for (built with the XML library). */
export function buildSnapshotXml(r: SnapshotRequest): string {
  return xmlBuilder.build({
    domainsnapshot: {
      name: r.name,
      ...(r.description !== undefined ? { description: r.description } : {}),
      ...(r.kind === 'external' ? { memory: r.memory && r.memoryFile ? { '@_snapshot': 'external', '@_file': r.memoryFile } : { '@_snapshot': 'no' } } : {}),
      disks: {
        disk: r.disks.map((d) =>
          d.mode === 'external' ? { '@_name': d.name, '@_snapshot': 'external', source: { '@_file': d.overlay } } : { '@_name': d.name, '@_snapshot': d.mode },
        ),
      },
    },
  }) as string;
}

// ---------------------------------------------------------------------------
// the record of files vmctl's snapshot commands made (domain metadata)

export const SNAP_XMLNS = 'https://vmctl.dev/xmlns/snapshot/1';
const PREFIX = 'vmctlsnap';

export interface SnapshotFile {
  path: string;
  role: 'overlay' | 'memory';
  /** the snapshot (or revert) that made it */
  snapshot: string;
}

export function parseSnapshotFiles(domainXml: string): SnapshotFile[] {
  const doc = xmlParserWith((name) => name.endsWith('file')).parse(domainXml) as { domain?: { metadata?: XmlNode } };
  const el = metadataElement(doc.domain?.metadata, SNAP_XMLNS);
  if (!el) return [];
  const files = Object.entries(el.node).filter(([fk]) => fk === 'file' || fk.endsWith(':file')).flatMap(([, fv]) => asArray(fv as XmlNode | XmlNode[]));
  return files.flatMap((f) => {
    const path = attr(f, 'path');
    const role = attr(f, 'role');
    return path && (role === 'overlay' || role === 'memory') ? [{ path, role, snapshot: attr(f, 'snapshot') ?? '' } as SnapshotFile] : [];
  });
}

function impact(running: boolean): number {
  const F = VirDomainModificationImpact;
  return running ? F.VIR_DOMAIN_AFFECT_LIVE | F.VIR_DOMAIN_AFFECT_CONFIG : F.VIR_DOMAIN_AFFECT_CONFIG;
}

/** Write the whole record (vmctl's own element; nothing else in the definition changes). */
export async function writeSnapshotFiles(dom: Domain, files: SnapshotFile[], running: boolean): Promise<void> {
  const xml =
    files.length === 0
      ? null
      : (xmlBuilder.build({ files: { file: files.map((f) => ({ '@_path': f.path, '@_role': f.role, '@_snapshot': f.snapshot })) } }) as string).trim();
  await dom.setMetadataElement(SNAP_XMLNS, PREFIX, xml, impact(running));
}
