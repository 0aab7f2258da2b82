/**
 * `vmctl migrate`, the move itself (after the pre-flight passed), under the
 * operation's lease, journal and undo stack:
 *
 *   mark     the intent on the source domain: `vmctlop:op` marker + the
 *            journal (destination, snapshots' XML) — carried along with the guest
 *   snapshots  their metadata removed on the source (data stays in the disks)
 *   volumes  the destination volumes for --copy-storage, same sizes and formats
 *   migrate  libvirt's migration (transport.ts), watched (worker.ts); Ctrl-C aborts the job
 *   finish   on the destination: snapshots redefined, journal cleared; client state moved
 *
 * A failure or Ctrl-C before the guest moved undoes everything (newest
 * first): volumes on the destination deleted, snapshot metadata back on the
 * source, markers cleared; the guest never stopped running on the source.
 */
import { VmctlError } from '../errors.js';
import type { Connection, Domain } from '../../libvirt/connection.js';
import { setMigrateMaxDowntime } from '../../libvirt/connection.js';
import { VirDomainXMLFlags } from '../../libvirt/generated/constants.gen.js';
import type { OpContext } from '../op/context.js';
import { clearMarker, newMarker, recordStep } from '../op/journal.js';
import { findVm, lookupVm } from '../vm/domain.js';
import { deleteVolumeAtIfThere, deleteVolumeIfThere, volumeXml } from '../storage/volume.js';
import { ensurePool, removePoolIfEmpty, VMCTL_POOL } from '../storage/pool.js';
import { rewriteDomainXml } from './facts.js';
import { clearJournal, redefineSnapshots, removeSnapshotMetadata, writeJournal } from './snapshots.js';
import { diskPathMap } from './recover.js';
import { runMigration } from './transport.js';
import { watchMigration } from './worker.js';
import { moveVmState } from './state.js';
import { forgetHostIdentity } from '../host/cache.js';
import type { MigratePlan, MigrateResult, MigrateStats } from './types.js';

const num = (v: unknown): number | undefined => (typeof v === 'bigint' ? Number(v) : typeof v === 'number' ? v : undefined);

async function guestActiveOn(conn: Connection, name: string, uuid: string): Promise<boolean> {
  const d = await lookupVm(conn, name).catch(() => undefined);
  return !!d && d.uuidString === uuid && (await d.isActive().catch(() => false));
}

/** Explain a failed migration: where the guest is, and why. */
function migrationError(plan: MigratePlan, e: unknown, aborted: boolean, stalled?: string): VmctlError {
  const why = stalled ?? (e as Error)?.message ?? String(e);
  if (aborted) return new VmctlError('ABORTED', `migration of '${plan.name}' interrupted: the job was aborted; it keeps running on ${plan.from}`);
  if (/unsafe migration/i.test(why)) {
    return new VmctlError('CONFLICT', `migration of '${plan.name}' refused by libvirt: ${why}; the guest keeps running on ${plan.from}, unchanged`, {
      hint: "libvirt cannot tell that this filesystem is shared by both hosts (it knows NFS, GlusterFS, Ceph, GFS2, OCFS2…): if the destination really sees the same files (vmctl's pre-flight found them there), add --unsafe; otherwise use --copy-storage all",
      cause: e,
    });
  }
  const lost = /connection|closed|keepalive|end of file|reset|refused|unable to connect|No route|timed out/i.test(why);
  return new VmctlError(lost ? 'CONNECTION' : 'LIBVIRT', `migration of '${plan.name}' to ${plan.to} failed: ${why}; the guest keeps running on ${plan.from}, unchanged`, {
    hint: lost ? 'the destination (its libvirtd, or the network to it) went away: fix that, then run the same command again' : 'see the message; nothing was left on the destination',
    cause: e,
  });
}

export async function applyMigrate(op: OpContext, plan: MigratePlan): Promise<MigrateResult> {
  const { name, uuid } = plan;
  const opts = plan.internal.opts;
  const src = op.conn;
  const dst = await op.connection(plan.to);
  await op.lease(`vm/${name}`, `VM '${name}'`);
  let dom: Domain = await findVm(src, name);
  if (dom.uuidString !== uuid) throw new VmctlError('CONFLICT', `VM '${name}' on ${plan.from} changed during the pre-flight`, { hint: 'run the command again' });
  const snaps = plan.internal.snapshotXml;

  // 1. the intent, on the source domain (live + config), carried along with the guest
  let marker = newMarker('migrate', op.id, 'mark');
  const copies = plan.disks.filter((d) => d.how === 'copy' || d.how === 'media');
  await writeJournal(
    dom,
    {
      from: plan.from,
      to: plan.to,
      keepSource: !!opts.keepSource,
      snapshots: snaps,
      made: copies.map((d) => ({ pool: d.destPool!, name: d.destVolume! })),
      sourceCopies: opts.keepSource ? [] : copies.filter((d) => d.owned).map((d) => d.sourcePath),
      ...(copies.some((d) => d.createPool) ? { makesPool: true } : {}),
    },
    true,
  );
  marker = await recordStep(dom, marker, 'mark', true);
  op.undo.push(`migration marker on ${name}`, async (c) => {
    const d = await lookupVm(c, name);
    if (!d || d.uuidString !== uuid) return;
    const active = await d.isActive();
    await clearMarker(d, active);
    await clearJournal(d, active);
  });
  await op.fault('after-mark');

  // 2. snapshots: metadata off the source (libvirt refuses to migrate with it)
  if (snaps.length > 0) {
    marker = await recordStep(dom, marker, 'snapshots', true);
    op.undo.push(`snapshot metadata of ${name} (${snaps.length})`, async (c) => {
      const d = await lookupVm(c, name);
      if (d && d.uuidString === uuid) await redefineSnapshots(d, snaps);
    });
    await op.step('snapshots', () => removeSnapshotMetadata(dom, snaps));
    await op.fault('after-snapshots');
  }

  // 3. destination volumes for --copy-storage
  const diskPaths = new Map<string, string>();
  const addVolumes: { disk: string; pool: string; name: string; path: string }[] = [];
  if (copies.length > 0) {
    marker = await recordStep(dom, marker, 'volumes', true);
    await op.step('volumes', async () => {
      if (copies.some((d) => d.createPool)) {
        const made = await ensurePool(dst);
        if (made.action === 'created') {
          op.notice(`made storage pool ${VMCTL_POOL} on ${plan.to} (vmctl's, as its first create there would)`);
          // undone after the volumes made in it (the undo stack runs last-in first)
          op.undo.push(`storage pool ${VMCTL_POOL} on ${plan.to}`, async () => {
            if (!(await guestActiveOn(dst, name, uuid))) await removePoolIfEmpty(dst);
          });
        }
      }
      for (const d of copies) {
        const pool = await dst.lookupStoragePool(d.destPool!);
        op.undo.push(`volume ${d.destVolume} on ${plan.to}`, async () => {
          if (!(await guestActiveOn(dst, name, uuid))) await deleteVolumeIfThere(dst, d.destPool!, d.destVolume!);
        });
        const fmt = d.format === 'qcow2' ? 'qcow2' : 'raw';
        const vol = await pool.createVolume(volumeXml({ name: d.destVolume!, capacityBytes: d.capacityBytes ?? 0, format: fmt, ...(d.backingPath ? { backing: { path: d.backingPath, format: 'qcow2' } } : {}) }));
        if (d.how === 'media') {
          // a read-only medium (the seed, < 1 MiB): its bytes through the two libvirt connections
          const from = await src.lookupStorageVolumeByPath(d.sourcePath);
          await vol.upload(await from.download(), { length: BigInt(d.capacityBytes ?? 0) });
        }
        const path = await vol.path();
        if (path !== d.sourcePath) diskPaths.set(d.sourcePath, path);
        if (d.recordAs) addVolumes.push({ disk: d.recordAs, pool: d.destPool!, name: d.destVolume!, path });
      }
    });
    await op.fault('after-volumes');
  }
  op.throwIfAborted();

  // 4. the move
  const X = VirDomainXMLFlags;
  const retyped = plan.internal.facts.domainType !== (plan.accel.guest === 'KVM' ? 'kvm' : 'qemu');
  const rewrite = diskPaths.size > 0 || addVolumes.length > 0 || plan.sshPort !== undefined || retyped;
  const how = { diskPaths, addVolumes, ...(plan.sshPort ? { sshPort: plan.sshPort } : {}), domainType: plan.internal.facts.domainType };
  const xmls = rewrite
    ? {
        destXml: rewriteDomainXml(await dom.xml(X.VIR_DOMAIN_XML_MIGRATABLE | X.VIR_DOMAIN_XML_SECURE), how),
        persistXml: rewriteDomainXml(await dom.xml(X.VIR_DOMAIN_XML_MIGRATABLE | X.VIR_DOMAIN_XML_SECURE | X.VIR_DOMAIN_XML_INACTIVE), how),
      }
    : {};
  await recordStep(dom, marker, 'migrating', true);
  await op.fault('before-migrate');
  op.throwIfAborted();
  op.phase('migrating', `${plan.mode} to ${plan.to}`);
  const t0 = performance.now();
  let aborted = false;
  let stalled: string | undefined;
  const abortJob = (why: string) => {
    op.log.info({ why }, 'aborting the migration job');
    dom.abortJob().catch((e: Error) => op.log.warn({ err: e.message }, 'abortJob failed'));
  };
  const onAbort = () => {
    aborted = true;
    abortJob('interrupted');
  };
  op.signal.addEventListener('abort', onAbort, { once: true });
  const migrating = runMigration(plan, dom, dst, {
    ...xmls,
    ...(copies.some((d) => d.how === 'copy') ? { migrateDisks: copies.filter((d) => d.how === 'copy').map((d) => d.target) } : {}),
  });
  const watching = watchMigration(op, dom, migrating, {
    policy: { ...(opts.postcopy ? { always: true } : {}), ...(opts.postcopyAfterS !== undefined ? { afterS: opts.postcopyAfterS } : {}) },
    ...(opts.pollMs ? { pollMs: opts.pollMs } : {}),
    t0,
    onFirstSample: async () => {
      if (opts.maxDowntimeMs !== undefined) await setMigrateMaxDowntime(dom, opts.maxDowntimeMs).catch((e: Error) => op.warn(`could not set the max downtime: ${e.message}`));
      await op.fault('mid-migration');
    },
    onStall: (why) => {
      stalled = why;
      abortJob(why);
    },
  });
  // awaited below, after the migration settles: a failure of the watch before then is not unhandled
  watching.catch(() => undefined);
  let dstDom: Domain;
  try {
    dstDom = await migrating;
  } catch (e) {
    await watching.catch(() => undefined);
    op.signal.removeEventListener('abort', onAbort);
    // the guest may have moved after all (a late error, e.g. confirm): never undo then
    if (await guestActiveOn(dst, name, uuid)) {
      op.undo.commit();
      op.warn(`libvirt reported an error at the end (${(e as Error).message}), but '${name}' runs on ${plan.to}`);
      dstDom = (await lookupVm(dst, name))!;
    } else {
      // something about a host may have changed (e.g. its QEMU): the next pre-flight asks afresh
      if (!(aborted || op.signal.aborted)) for (const c of [src, dst]) forgetHostIdentity(c);
      throw migrationError(plan, e, aborted || op.signal.aborted, stalled);
    }
  }
  op.signal.removeEventListener('abort', onAbort);
  const watched = await watching;
  const timeMs = Math.round(performance.now() - t0);
  // the guest has moved: nothing below may roll it back
  op.undo.commit();
  op.phase('migrated', `${(timeMs / 1000).toFixed(1)} s`);
  await op.fault('after-migrate');

  // 5. finish on the destination
  const warnings: string[] = [];
  const carried: string[] = [];
  try {
    const dxml = await dstDom.xml();
    if (snaps.length > 0) {
      await redefineSnapshots(dstDom, snaps, diskPathMap(snaps[0]!.xml, dxml));
      carried.push(...snaps.map((s) => s.name));
    }
    await clearMarker(dstDom, true);
    await clearJournal(dstDom, true);
  } catch (e) {
    warnings.push(`finishing on the destination: ${(e as Error).message} (vmctl migrate ${name} --to ${plan.to} --recover sets it right)`);
  }
  if (opts.keepSource) {
    try {
      dom = await findVm(src, name);
      await redefineSnapshots(dom, snaps);
      await clearMarker(dom);
      await clearJournal(dom, false);
    } catch (e) {
      warnings.push(`restoring the kept source definition: ${(e as Error).message}`);
    }
  }
  // the copied volumes' originals that vmctl made for this VM (disks, seed, its own boot files)
  // belong to nothing on the source now: the guest lives on exactly one host. An image's
  // kernel/initrd stay (other VMs boot from them); disks vmctl did not make are never touched.
  const sourceRemoved: string[] = [];
  const sourceLeft: string[] = [];
  if (!opts.keepSource) {
    for (const d of copies) {
      if (!d.owned) {
        if (d.how === 'copy') sourceLeft.push(d.sourcePath);
        continue;
      }
      try {
        if (await deleteVolumeAtIfThere(src, d.sourcePath)) sourceRemoved.push(d.sourcePath);
      } catch (e) {
        warnings.push(`removing the source's copy of ${d.target} (${d.sourcePath}): ${(e as Error).message} (remove it there with virsh vol-delete ${d.sourcePath})`);
      }
    }
    if (sourceLeft.length > 0) {
      warnings.push(`the source keeps its copy of ${sourceLeft.join(', ')}: vmctl did not create ${sourceLeft.length === 1 ? 'it' : 'them'} (remove with virsh vol-delete PATH once you no longer need ${sourceLeft.length === 1 ? 'it' : 'them'})`);
    }
  }
  try {
    moveVmState(plan.from, plan.to, name, { keep: !!opts.keepSource, ...(plan.sshPort ? { sshPort: plan.sshPort } : {}) });
  } catch (e) {
    warnings.push(`moving vmctl's client-side state: ${(e as Error).message}`);
  }
  for (const w of warnings) op.warn(w);

  const stats = await completedStats(dstDom, timeMs, watched.postcopyAtMs !== undefined);
  return {
    name,
    from: plan.from,
    to: plan.to,
    mode: plan.mode,
    state: (await dstDom.state()).state,
    runsOn: plan.to,
    snapshotsCarried: carried,
    disksCopied: copies.filter((d) => d.how === 'copy').map((d) => d.target),
    sourceRemoved,
    sourceLeft,
    sourceKept: !!opts.keepSource,
    checks: plan.checks,
    ...stats,
    ...(watched.postcopyAtMs !== undefined ? { postcopySwitchAtMs: watched.postcopyAtMs } : {}),
    ...(watched.last ? { iterations: watched.last.iteration } : {}),
  };
}

/** The completed job's statistics (downtime, bytes), from the destination (the source may be gone). */
async function completedStats(dom: Domain, timeMs: number, postcopy: boolean): Promise<MigrateStats> {
  try {
    const s = await dom.jobStats({ completed: true, keepCompleted: true });
    const p = s.params;
    const downtime = num(p.downtime);
    const bytes = num(p.data_processed);
    const mem = num(p.memory_processed);
    const disk = num(p.disk_processed);
    const it = num(p.memory_iteration);
    return {
      timeMs,
      postcopy,
      ...(downtime !== undefined ? { downtimeMs: downtime } : {}),
      ...(bytes !== undefined ? { bytes } : {}),
      ...(mem !== undefined ? { memoryBytes: mem } : {}),
      ...(disk !== undefined ? { diskBytes: disk } : {}),
      ...(it !== undefined ? { iterations: it } : {}),
    };
  } catch {
    return { timeMs, postcopy };
  }
}
