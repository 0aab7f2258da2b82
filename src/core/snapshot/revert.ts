/**
 * `vmctl snapshot revert`. Internal snapshots: libvirt reverts disks and
 * memory. External ones: Debian 12's libvirt 9.0 cannot revert them (libvirt
 * learnt it in late 2023), so vmctl does what libvirt does now, for the disks
 * it manages: a new overlay on each disk's layer at the snapshot (made through
 * the storage API, mode 0600, recorded first), the domain definition moved onto
 * the new overlays, the memory image restored when the snapshot has one, and
 * the snapshot marked current. The abandoned branch (the overlays written
 * after the snapshot) is kept as a sibling, or deleted with `discard`.
 */
import { basename, dirname } from 'node:path';
import { VmctlError } from '../errors.js';
import { LibvirtError } from '../../libvirt/errors.js';
import {
  VirDomainCreateFlags,
  VirDomainSaveRestoreFlags,
  VirDomainSnapshotCreateFlags,
  VirDomainSnapshotRevertFlags as R,
  VirDomainXMLFlags,
} from '../../libvirt/generated/constants.gen.js';
import type { OpContext } from '../op/context.js';
import { clearMarker, newMarker, recordStep } from '../op/journal.js';
import { volumeXml } from '../storage/volume.js';
import { findVm } from '../vm/domain.js';
import { parseSnapshotFiles, writeSnapshotFiles, type SnapshotInfo } from './model.js';
import { backingChain, domainDisks, withDiskSources } from './disks.js';
import { findSnapshot, listSnapshotInfos } from './list.js';
import { refreshPools } from './pools.js';
import { settleSnapshotState } from './recover.js';

export interface SnapshotRevertOptions {
  /** state afterwards: running, paused, or the snapshot's own (default) */
  state?: 'running' | 'paused';
  /** external: delete the abandoned branch's overlays instead of keeping them */
  discard?: boolean;
}

export interface SnapshotRevertResult {
  vm: string;
  snapshot: string;
  kind: 'internal' | 'external';
  state: string;
  /** external: the new overlays the disks now write to */
  overlays?: string[];
  /** external: overlays of the abandoned branch (kept unless discarded) */
  abandoned?: string[];
  discarded?: boolean;
}

export async function revertSnapshot(op: OpContext, vm: string, name: string, opts: SnapshotRevertOptions = {}): Promise<SnapshotRevertResult> {
  const conn = op.conn;
  const dom = await findVm(conn, vm);
  await op.lease(`vm/${vm}`, `VM '${vm}'`);
  await settleSnapshotState(op, dom);
  // independent reads, in flight together (one round trip instead of several)
  const [info, all, liveXml] = await Promise.all([findSnapshot(dom, name), listSnapshotInfos(dom), dom.xml()]);

  if (info.kind === 'internal') {
    // an internal snapshot lives in one qcow2 layer: it must still be the top one
    const topSources = domainDisks(liveXml).filter((d) => d.device === 'disk' && !d.readonly);
    const owners = new Set((info.domainXml ? domainDisks(info.domainXml) : []).filter((d) => d.device === 'disk' && !d.readonly).map((d) => d.source));
    if (topSources.some((d) => d.source && owners.size > 0 && !owners.has(d.source))) {
      // newest layer first — the order in which to delete them (libvirt lists snapshots in no fixed order)
      const byName = new Map(all.map((s) => [s.name, s]));
      const depth = (s: SnapshotInfo): number => {
        let d = 0;
        for (let p = s.parent; p !== undefined && d < all.length; p = byName.get(p)?.parent) d++;
        return d;
      };
      const above = all
        .filter((s) => s.kind === 'external')
        .sort((a, b) => depth(b) - depth(a) || b.createdAt.localeCompare(a.createdAt) || a.name.localeCompare(b.name))
        .map((s) => s.name);
      throw new VmctlError('CONFLICT', `internal snapshot ${name} of ${vm} lives in a layer that external snapshots (${above.join(', ')}) were taken on top of`, {
        hint: `delete those first (vmctl snapshot delete ${vm} SNAPSHOT merges each back), then revert to ${name}`,
      });
    }
    const flags = opts.state === 'running' ? R.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING : opts.state === 'paused' ? R.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED : 0;
    await op.step('revert', () => info.snap.revert(flags));
    return { vm, snapshot: name, kind: 'internal', state: (await dom.state()).state };
  }

  // external: a new overlay per disk on its layer at the snapshot
  const inactive = await dom.xml(VirDomainXMLFlags.VIR_DOMAIN_XML_INACTIVE);
  const current = new Map(domainDisks(inactive).flatMap((d) => (d.source ? [[d.target, d.source] as [string, string]] : [])));
  const wasRunning = (await dom.state()).state !== 'shutoff';
  const before = parseSnapshotFiles(inactive);
  const marker = await recordStep(dom, newMarker('snapshot-revert', op.id, 'overlays'), 'overlays', wasRunning);
  await refreshPools(op);
  const made: { disk: string; path: string; base: string }[] = [];
  const stamp = Date.now().toString(36);
  for (const d of info.disks) {
    if (d.snapshot !== 'external' || !d.base) continue;
    let baseVol;
    try {
      baseVol = await conn.lookupStorageVolumeByPath(d.base);
    } catch (e) {
      if (e instanceof LibvirtError && e.isNotFound()) {
        throw new VmctlError('NOT_FOUND', `cannot revert ${vm} to ${name}: disk ${d.name}'s layer at that snapshot (${d.base}) is gone`, { hint: 'that snapshot cannot be brought back' });
      }
      throw e;
    }
    const pool = await conn.lookupStoragePool(baseVol.poolName);
    const volName = `${vm}-${d.name}.${name}.r${stamp}.qcow2`;
    const path = `${dirname(d.base)}/${volName}`;
    const fmt = domainDisks(info.domainXml ?? inactive).find((x) => x.target === d.name)?.format ?? 'qcow2';
    const capacity = Number((await baseVol.info()).capacity);
    // record first, then make it
    await writeSnapshotFiles(dom, [...parseSnapshotFiles(await dom.xml(VirDomainXMLFlags.VIR_DOMAIN_XML_INACTIVE)), { path, role: 'overlay', snapshot: `revert:${name}` }], wasRunning);
    const vol = await pool.createVolume(volumeXml({ name: volName, capacityBytes: capacity, format: 'qcow2', backing: { path: d.base, format: fmt } }));
    op.undo.push(`overlay ${basename(path)}`, async (c) => {
      await (await c.lookupStorageVolumeByPath(path)).delete().catch(() => undefined);
    });
    made.push({ disk: d.name, path: await vol.path(), base: d.base });
  }
  op.undo.push('record of the revert overlays', async (c) => writeSnapshotFiles(await c.lookupDomain(vm), before, false));
  await op.fault('after-overlays');

  // the switch: stop, point the disks at the new overlays, restore the memory (or start) as asked
  await recordStep(dom, marker, 'switch', wasRunning);
  if (wasRunning) await dom.destroy();
  const newXml = withDiskSources(await dom.xml(VirDomainXMLFlags.VIR_DOMAIN_XML_INACTIVE), new Map(made.map((m) => [m.disk, m.path])));
  await conn.defineDomain(newXml);
  op.undo.commit(); // the definition now uses the new overlays: they stay
  const want = opts.state ?? (info.state === 'running' || info.state === 'paused' ? (info.state as 'running' | 'paused') : undefined);
  if (info.memoryFile) {
    const flags = want === 'paused' ? VirDomainSaveRestoreFlags.VIR_DOMAIN_SAVE_PAUSED : VirDomainSaveRestoreFlags.VIR_DOMAIN_SAVE_RUNNING;
    await op.step('restore memory', () => conn.restoreDomain(info.memoryFile!, newXml, flags));
  } else if (want) {
    await dom.start(want === 'paused' ? VirDomainCreateFlags.VIR_DOMAIN_START_PAUSED : 0);
  }
  await op.fault('after-switch');
  // libvirt's tree: this snapshot is current again (new snapshots become its children)
  await dom.createSnapshot(await info.snap.xml(), VirDomainSnapshotCreateFlags.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | VirDomainSnapshotCreateFlags.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT);
  const running = (await dom.state()).state !== 'shutoff';

  // the abandoned branch: the layers the disks wrote to until now, above the snapshot's layer
  const abandoned: string[] = [];
  for (const m of made) {
    const top = current.get(m.disk);
    if (!top) continue;
    const chain = await backingChain(conn, top);
    const idx = chain.indexOf(m.base);
    for (const p of idx < 0 ? [] : chain.slice(0, idx)) {
      // still the layer some snapshot's state is in: never abandoned
      if (!all.some((s) => s.disks.some((x) => x.base === p))) abandoned.push(p);
    }
  }
  const recorded = new Set(parseSnapshotFiles(newXml).map((f) => f.path));
  if (opts.discard) {
    for (const p of abandoned.filter((x) => recorded.has(x))) {
      await (await conn.lookupStorageVolumeByPath(p)).delete().catch(() => undefined);
    }
    await writeSnapshotFiles(dom, parseSnapshotFiles(newXml).filter((f) => !abandoned.includes(f.path)), running);
  }
  await clearMarker(dom, running);
  return {
    vm,
    snapshot: name,
    kind: 'external',
    state: (await dom.state()).state,
    overlays: made.map((m) => m.path),
    abandoned,
    ...(opts.discard ? { discarded: true } : {}),
  };
}
