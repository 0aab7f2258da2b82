/** `vmctl snapshot list` (a tree) and `snapshot info`. */
import { VmctlError } from '../errors.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Connection, Domain, Snapshot } from '../../libvirt/connection.js';
import { findVm } from '../vm/domain.js';
import { parseSnapshotSummary, parseSnapshotXml, type SnapshotInfo, type SnapshotKind } from './model.js';

export interface SnapshotEntry extends Omit<SnapshotInfo, 'domainXml'> {
  current: boolean;
  children: string[];
  /** bytes of the external files (overlays + memory image); internal data lives inside the qcow2 */
  sizeBytes?: number;
  /** depth in the tree (roots 0) */
  depth: number;
}

export async function listSnapshotInfos(dom: Domain): Promise<(SnapshotInfo & { snap: Snapshot })[]> {
  const snaps = await dom.listSnapshots();
  const xmls = await Promise.all(snaps.map((s) => s.xml()));
  return snaps.map((snap, i) => ({ ...parseSnapshotXml(xmls[i]!), snap }));
}

/** Every snapshot's name and kind (parseSnapshotSummary: the domain definitions inside are not parsed). */
export async function listSnapshotSummaries(dom: Domain): Promise<{ name: string; kind: SnapshotKind }[]> {
  const snaps = await dom.listSnapshots();
  return (await Promise.all(snaps.map((s) => s.xml()))).map(parseSnapshotSummary);
}

export async function findSnapshot(dom: Domain, name: string): Promise<SnapshotInfo & { snap: Snapshot }> {
  try {
    const snap = await dom.lookupSnapshot(name);
    return { ...parseSnapshotXml(await snap.xml()), snap };
  } catch (e) {
    if (e instanceof LibvirtError && e.isNotFound()) {
      throw new VmctlError('NOT_FOUND', `VM ${dom.name} has no snapshot named '${name}'`, { hint: `see vmctl snapshot list ${dom.name}` });
    }
    throw e;
  }
}

async function fileSize(conn: Connection, path: string): Promise<number> {
  try {
    const info = await (await conn.lookupStorageVolumeByPath(path)).info();
    return Number(info.allocation);
  } catch {
    return 0;
  }
}

/** Every snapshot of the VM, parents before children (a depth-first tree walk), current marked. */
export async function listSnapshots(conn: Connection, vm: string): Promise<SnapshotEntry[]> {
  const dom = await findVm(conn, vm);
  const infos = await listSnapshotInfos(dom);
  const current = (await dom.currentSnapshot())?.name;
  const byParent = new Map<string, SnapshotInfo[]>();
  for (const s of infos) {
    const k = s.parent ?? '';
    byParent.set(k, [...(byParent.get(k) ?? []), s]);
  }
  for (const list of byParent.values()) list.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  const out: SnapshotEntry[] = [];
  const walk = async (parent: string, depth: number) => {
    for (const s of byParent.get(parent) ?? []) {
      const { domainXml: _d, ...rest } = s as SnapshotInfo & { snap?: unknown };
      delete (rest as { snap?: unknown }).snap;
      const ext = [...s.disks.flatMap((d) => (d.overlay ? [d.overlay] : [])), ...(s.memoryFile ? [s.memoryFile] : [])];
      const size = ext.length ? (await Promise.all(ext.map((p) => fileSize(conn, p)))).reduce((a, b) => a + b, 0) : undefined;
      out.push({ ...rest, current: s.name === current, children: (byParent.get(s.name) ?? []).map((c) => c.name), depth, ...(size !== undefined ? { sizeBytes: size } : {}) });
      await walk(s.name, depth + 1);
    }
  };
  await walk('', 0);
  return out;
}
