/**
 * `vmctl snapshot delete`: internal snapshots through libvirt; external ones
 * (which libvirt 9.0 can only forget, not merge) by merging their overlay back
 * into the layer below with a block commit — the active layer with an active
 * commit and a pivot — so chains stay short, then removing the overlay, the
 * memory image and the metadata. A stopped VM is started paused for the
 * commit (block jobs need a running QEMU) and stopped again.
 */
import { VmctlError } from '../errors.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Domain } from '../../libvirt/connection.js';
import {
  VirDomainBlockCommitFlags,
  VirDomainBlockJobAbortFlags,
  VirDomainCreateFlags,
  VirDomainSnapshotDeleteFlags as D,
  VirDomainXMLFlags,
} from '../../libvirt/generated/constants.gen.js';
import type { OpContext } from '../op/context.js';
import { clearMarker, newMarker, recordStep } from '../op/journal.js';
import { findVm } from '../vm/domain.js';
import { parseSnapshotFiles, writeSnapshotFiles, type SnapshotInfo } from './model.js';
import { backingChain, domainDisks, withDiskSources } from './disks.js';
import { findSnapshot, listSnapshotInfos } from './list.js';
import { refreshPools } from './pools.js';
import { settleSnapshotState } from './recover.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface SnapshotDeleteResult {
  vm: string;
  deleted: string[];
  /** overlays merged back (disk: overlay → into) */
  merged: { disk: string; overlay: string; into: string }[];
}

export async function deleteSnapshot(op: OpContext, vm: string, name: string, opts: { children?: boolean } = {}): Promise<SnapshotDeleteResult> {
  const dom = await findVm(op.conn, vm);
  await op.lease(`vm/${vm}`, `VM '${vm}'`);
  await settleSnapshotState(op, dom);
  const info = await findSnapshot(dom, name);
  return deleteSnapshotIn(op, dom, info, { children: opts.children === true });
}

/** Wait for a block job on `disk` to reach `ready` (active commit) or to end. */
async function waitBlockJob(op: OpContext, dom: Domain, disk: string, until: 'ready' | 'gone'): Promise<void> {
  const deadline = performance.now() + 30 * 60_000;
  op.waiting(until === 'ready' ? `the merge of ${disk} to catch up` : `the merge of ${disk} to finish`);
  while (performance.now() < deadline) {
    const j = await dom.blockJobInfo(disk);
    if (!j) return;
    if (until === 'ready' && j.end > 0n && j.cur === j.end) return;
    op.progress({ phase: 'merge', item: disk, done: Number(j.cur), ...(j.end > 0n ? { total: Number(j.end) } : {}) });
    await sleep(200);
  }
  throw new VmctlError('TIMEOUT', `the block commit of ${disk} did not finish within 30 minutes`, { hint: `look at virsh blockjob ${dom.name} ${disk}` });
}

export async function deleteSnapshotIn(
  op: OpContext,
  dom: Domain,
  info: SnapshotInfo & { snap: { delete(flags?: number): Promise<void> } },
  opts: { children: boolean; quietChildren?: boolean },
): Promise<SnapshotDeleteResult> {
  const vm = dom.name;
  const all = await listSnapshotInfos(dom);
  const children = all.filter((s) => s.parent === info.name);
  const result: SnapshotDeleteResult = { vm, deleted: [], merged: [] };
  // an internal snapshot's children are re-parented by libvirt; an external one's depend on its layer
  if (children.length > 0 && !opts.children && info.kind === 'external') {
    throw new VmctlError('CONFLICT', `snapshot ${info.name} of ${vm} has children (${children.map((c) => c.name).join(', ')})`, {
      hint: `delete those first, or pass --children to delete them with it`,
    });
  }
  // children first, deepest first
  for (const c of opts.children ? children : []) {
    const r = await deleteSnapshotIn(op, dom, c, opts);
    result.deleted.push(...r.deleted);
    result.merged.push(...r.merged);
  }
  if (info.kind === 'internal') {
    await op.step(`delete ${info.name}`, () => info.snap.delete(0));
    result.deleted.push(info.name);
    return result;
  }

  // external: the snapshot's state is its base layer B; with the snapshot gone B need not stay
  // frozen, so everything above B on the disk's active chain is merged down into B (active commit +
  // pivot) and the layers vmctl made above it are removed
  let running = (await dom.state()).state !== 'shutoff';
  const marker = await recordStep(dom, newMarker('snapshot-delete', op.id, 'merge'), 'merge', running);
  let startedForMerge = false;
  await refreshPools(op);
  const xml = await dom.xml();
  const ours = new Set(parseSnapshotFiles(xml).map((f) => f.path));
  const sources = new Map(domainDisks(xml).flatMap((d) => (d.source ? [[d.target, d.source] as [string, string]] : [])));
  const rewrite = new Map<string, string>();
  const gone = new Set<string>([...info.disks.flatMap((d) => (d.overlay && ours.has(d.overlay) ? [d.overlay] : [])), ...(info.memoryFile ? [info.memoryFile] : [])]);
  for (const d of info.disks) {
    if (!d.base) continue;
    const top = sources.get(d.name);
    if (!top) continue;
    const chain = await backingChain(op.conn, top);
    const at = chain.indexOf(d.base);
    if (at <= 0) continue; // B is on top already, or the snapshot is on an abandoned branch
    const above = chain.slice(0, at);
    if (above.some((p) => !ours.has(p))) {
      throw new VmctlError('CONFLICT', `disk ${d.name} of ${vm} has layers above snapshot ${info.name} that vmctl did not make (${above.filter((p) => !ours.has(p)).join(', ')})`, {
        hint: 'vmctl merges only its own layers; remove the snapshot metadata with virsh snapshot-delete --metadata',
      });
    }
    if (!running) {
      // recorded first: whoever finishes an interrupted delete stops it again
      await recordStep(dom, marker, 'merge-paused', false);
      await dom.start(VirDomainCreateFlags.VIR_DOMAIN_START_PAUSED);
      running = true;
      startedForMerge = true;
    }
    await op.step(`merge ${d.name}`, async () => {
      await dom.blockCommit(d.name, d.base!, null, VirDomainBlockCommitFlags.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE);
      await waitBlockJob(op, dom, d.name, 'ready');
      await dom.abortBlockJob(d.name, VirDomainBlockJobAbortFlags.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT);
      await waitBlockJob(op, dom, d.name, 'gone');
    });
    rewrite.set(d.name, d.base);
    for (const p of above) gone.add(p);
    result.merged.push({ disk: d.name, overlay: above.join(' + '), into: d.base });
    await op.fault('after-merge');
  }
  // the persistent definition follows the pivot
  if (rewrite.size > 0) {
    const inactive = await dom.xml(VirDomainXMLFlags.VIR_DOMAIN_XML_INACTIVE);
    const stale = new Map([...rewrite].filter(([t, p]) => domainDisks(inactive).find((x) => x.target === t)?.source !== p));
    if (stale.size > 0) await op.conn.defineDomain(withDiskSources(inactive, stale));
  }
  if (startedForMerge) {
    await dom.destroy();
    running = false;
  }
  await recordStep(dom, marker, 'remove-files', running);
  // the overlays and the memory image go, then the metadata; so do abandoned branches of vmctl's
  // that were built on a layer going away (they could never be used again)
  await refreshPools(op);
  for (const f of parseSnapshotFiles(xml)) {
    if (f.role !== 'overlay' || gone.has(f.path) || [...sources.values()].includes(f.path)) continue;
    const chain = await backingChain(op.conn, f.path);
    if (chain.slice(1).some((p) => gone.has(p))) gone.add(f.path);
  }
  for (const path of gone) {
    try {
      await (await op.conn.lookupStorageVolumeByPath(path)).delete();
    } catch (e) {
      if (!(e instanceof LibvirtError && e.isNotFound())) throw e;
    }
  }
  await info.snap.delete(D.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY);
  const kept = parseSnapshotFiles(await dom.xml(VirDomainXMLFlags.VIR_DOMAIN_XML_INACTIVE)).filter((f) => !gone.has(f.path));
  await writeSnapshotFiles(dom, kept, running);
  await clearMarker(dom, running);
  result.deleted.push(info.name);
  return result;
}
