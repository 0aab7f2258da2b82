/**
 * Snapshots carried along: libvirt refuses to migrate a guest that has
 * snapshot metadata. vmctl records the metadata in the journal on the source
 * domain first (a `vmctlmig:migration` metadata element, carried to the
 * destination with the domain), removes the metadata — only the metadata —
 * on the source, and after the move redefines it on the destination (disk
 * paths rewritten) or, if anything fails, on the source again.
 */
import { metadataElement, xmlBuilder, xmlParserWith } from '../xml.js';
import type { Domain } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VirDomainModificationImpact, VirDomainSnapshotCreateFlags, VirDomainSnapshotDeleteFlags, VirDomainSnapshotListFlags, VirDomainSnapshotXMLFlags } from '../../libvirt/generated/constants.gen.js';
import type { SnapshotInfo } from './types.js';

export const MIGRATE_XMLNS = 'https://vmctl.dev/xmlns/migrate/1';
const PREFIX = 'vmctlmig';

export interface MigrationJournal {
  from: string;
  to: string;
  keepSource: boolean;
  snapshots: SnapshotInfo[];
  /** --copy-storage: the volumes vmctl makes on the destination (removed there if the move is rolled back) */
  made?: { pool: string; name: string }[];
  /** the source's copies of volumes vmctl made for the VM (removed once the guest runs on the destination) */
  sourceCopies?: string[];
  /** --copy-storage to a host without vmctl's pool: vmctl makes it (removed there again, while empty, if the move is rolled back) */
  makesPool?: boolean;
}

/** The guest's snapshots, parents before children, with their XML. */
export async function readSnapshots(dom: Domain): Promise<SnapshotInfo[]> {
  const snaps = await dom.listSnapshots(VirDomainSnapshotListFlags.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL);
  if (snaps.length === 0) return [];
  const current = await dom.currentSnapshotName();
  const out: SnapshotInfo[] = [];
  for (const s of snaps) out.push({ name: s.name, current: s.name === current, xml: await s.xml(VirDomainSnapshotXMLFlags.VIR_DOMAIN_SNAPSHOT_XML_SECURE) });
  return out;
}

function impact(running: boolean): number {
  const F = VirDomainModificationImpact;
  return running ? F.VIR_DOMAIN_AFFECT_LIVE | F.VIR_DOMAIN_AFFECT_CONFIG : F.VIR_DOMAIN_AFFECT_CONFIG;
}

/** Write the journal into the domain's metadata (before any snapshot metadata is removed). */
export async function writeJournal(dom: Domain, j: MigrationJournal, running: boolean): Promise<void> {
  const xml = (
    xmlBuilder.build({
      migration: {
        '@_from': j.from,
        '@_to': j.to,
        '@_keepSource': j.keepSource ? 'yes' : 'no',
        ...(j.makesPool ? { '@_makesPool': 'yes' } : {}),
        snapshot: j.snapshots.map((s) => ({ '@_name': s.name, '@_current': s.current ? 'yes' : 'no', '#text': Buffer.from(s.xml).toString('base64') })),
        ...(j.made?.length ? { volume: j.made.map((v) => ({ '@_pool': v.pool, '@_name': v.name })) } : {}),
        ...(j.sourceCopies?.length ? { 'source-copy': j.sourceCopies.map((path) => ({ '@_path': path })) } : {}),
      },
    }) as string
  ).trim();
  await dom.setMetadataElement(MIGRATE_XMLNS, PREFIX, xml, impact(running));
}

export async function clearJournal(dom: Domain, running: boolean): Promise<void> {
  await dom.setMetadataElement(MIGRATE_XMLNS, PREFIX, null, impact(running));
}

const parser = xmlParserWith((name) => ['snapshot', 'volume', 'source-copy'].includes(name.slice(name.indexOf(':') + 1)));

/** The journal in a domain XML, or null. */
export function parseJournal(domainXml: string): MigrationJournal | null {
  const doc = parser.parse(domainXml) as { domain?: { metadata?: Record<string, unknown> } };
  const el = metadataElement(doc.domain?.metadata, MIGRATE_XMLNS, 'migration');
  if (el) {
    const node = el.node;
    const list = (local: string) => (node[`${el.p}${local}`] as Record<string, unknown>[] | undefined) ?? [];
    const made = list('volume').map((v) => ({ pool: String(v['@_pool'] ?? ''), name: String(v['@_name'] ?? '') }));
    const sourceCopies = list('source-copy').map((c) => String(c['@_path'] ?? ''));
    return {
      from: String(node['@_from'] ?? ''),
      to: String(node['@_to'] ?? ''),
      keepSource: node['@_keepSource'] === 'yes',
      ...(node['@_makesPool'] === 'yes' ? { makesPool: true } : {}),
      snapshots: list('snapshot').map((s) => ({ name: String(s['@_name']), current: s['@_current'] === 'yes', xml: Buffer.from(String(s['#text'] ?? ''), 'base64').toString('utf8') })),
      ...(made.length ? { made } : {}),
      ...(sourceCopies.length ? { sourceCopies } : {}),
    };
  }
  return null;
}

/** Remove the snapshots' metadata (children first); the snapshot data in the disks stays. */
export async function removeSnapshotMetadata(dom: Domain, snaps: readonly SnapshotInfo[]): Promise<void> {
  for (const s of [...snaps].reverse()) {
    try {
      await (await dom.lookupSnapshot(s.name)).delete(VirDomainSnapshotDeleteFlags.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY);
    } catch (e) {
      if (!(e instanceof LibvirtError && e.isNotFound())) throw e;
    }
  }
}

/** Rewrite the disk paths in a snapshot's XML (its <disks> and its <domain>). */
export function rewriteSnapshotXml(xml: string, diskPaths: ReadonlyMap<string, string>): string {
  if (diskPaths.size === 0) return xml;
  const p = xmlParserWith((name) => name === 'disk');
  const doc = p.parse(xml) as { domainsnapshot: Record<string, unknown> };
  const fix = (disks: unknown) => {
    for (const d of (disks as Record<string, unknown>[] | undefined) ?? []) {
      const src = d.source as Record<string, unknown> | undefined;
      const f = src?.['@_file'];
      if (src && typeof f === 'string' && diskPaths.has(f)) src['@_file'] = diskPaths.get(f);
    }
  };
  const ds = doc.domainsnapshot;
  fix((ds.disks as Record<string, unknown> | undefined)?.disk);
  fix(((ds.domain as Record<string, unknown> | undefined)?.devices as Record<string, unknown> | undefined)?.disk);
  return xmlBuilder.build(doc) as string;
}

/** Redefine the snapshots (parents first), the current one last marked current. Skips ones that exist. */
export async function redefineSnapshots(dom: Domain, snaps: readonly SnapshotInfo[], diskPaths: ReadonlyMap<string, string> = new Map()): Promise<void> {
  const F = VirDomainSnapshotCreateFlags;
  const have = new Set((await dom.listSnapshots()).map((s) => s.name));
  for (const s of snaps) {
    if (have.has(s.name)) continue;
    await dom.createSnapshot(rewriteSnapshotXml(s.xml, diskPaths), F.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE);
  }
  const current = snaps.find((s) => s.current);
  if (current) await dom.createSnapshot(rewriteSnapshotXml(current.xml, diskPaths), F.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | F.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT);
}
