/**
 * `vmctl snapshot create`: an internal qcow2 snapshot (with the memory state of
 * a running guest) where it works, else an external one (disk-only, or disks +
 * a memory image), saying why when vmctl had to choose. The read-only
 * cloud-init seed never takes part. Files an external snapshot makes are
 * recorded (model.ts) before they exist, under an intent marker, so an
 * interrupted snapshot is cleaned up by `vmctl delete` and never stranded.
 */
import { dirname, join } from 'node:path';
import { VmctlError } from '../errors.js';
import { assertSnapshotName } from '../names.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VirDomainSnapshotCreateFlags as F, VirDomainXMLFlags } from '../../libvirt/generated/constants.gen.js';
import type { OpContext } from '../op/context.js';
import { clearMarker, newMarker, recordStep } from '../op/journal.js';
import { parseVmctlMetadata } from '../vm/domain-xml.js';
import { findVm } from '../vm/domain.js';
import { buildSnapshotXml, parseSnapshotFiles, parseSnapshotXml, writeSnapshotFiles, type SnapshotFile, type SnapshotInfo, type SnapshotKind } from './model.js';
import { domainDisks, snapshotableDisks } from './disks.js';
import { listSnapshotInfos, listSnapshotSummaries } from './list.js';
import { deleteSnapshotIn } from './remove.js';
import { refreshPools } from './pools.js';
import { settleSnapshotState } from './recover.js';

export interface SnapshotCreateOptions {
  name?: string;
  description?: string;
  diskOnly?: boolean;
  noMemory?: boolean;
  /**
   * freeze the guest's filesystems for a disk-only snapshot of a running guest: true (asked for:
   * notices when there is nothing to freeze), false (never), undefined (whenever the agent answers)
   */
  quiesce?: boolean;
  /** keep at most this many snapshots: the oldest beyond it are deleted */
  keep?: number;
}

export interface SnapshotCreateResult {
  vm: string;
  name: string;
  kind: SnapshotKind;
  memory: boolean;
  /** why vmctl chose this kind, when it had to */
  why?: string;
  quiesced: boolean;
  files: string[];
  /** removed by --keep */
  pruned: string[];
}

function defaultName(now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `snap-${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}-${p(now.getUTCHours())}${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}`;
}

/** The kind that works for this VM, and why when it is not the default (internal). */
export function chooseKind(o: {
  running: boolean;
  diskOnly: boolean;
  noMemory: boolean;
  uefi: boolean;
  rawDisk?: string;
  hasExternal: boolean;
}): { kind: SnapshotKind; memory: boolean; why?: string } {
  if (o.diskOnly) return { kind: 'external', memory: false, why: '--disk-only: an external snapshot (a new overlay per disk)' };
  if (o.running && o.noMemory) {
    return { kind: 'external', memory: false, why: "a running guest's internal snapshot always holds its memory: --no-memory takes an external disk-only one" };
  }
  const memory = o.running && !o.noMemory;
  if (o.uefi) return { kind: 'external', memory, why: 'libvirt refuses internal snapshots of UEFI (pflash) guests: external' };
  if (o.rawDisk) return { kind: 'external', memory, why: `disk ${o.rawDisk} is raw, which cannot hold internal snapshots: external` };
  if (o.hasExternal) {
    return { kind: 'external', memory, why: 'this VM already has external snapshots, so its top layer is an overlay: external again (internal ones would be buried under it)' };
  }
  return { kind: 'internal', memory };
}

export async function createSnapshot(op: OpContext, vm: string, opts: SnapshotCreateOptions = {}): Promise<SnapshotCreateResult> {
  const conn = op.conn;
  const dom = await findVm(conn, vm);
  await op.lease(`vm/${vm}`, `VM '${vm}'`);
  const liveXml = await dom.xml();
  if (!parseVmctlMetadata(liveXml)) {
    throw new VmctlError('CONFLICT', `VM '${vm}' was not created by vmctl; vmctl snapshots only its own VMs`, { hint: `use virsh snapshot-create-as ${vm}` });
  }
  await settleSnapshotState(op, dom, liveXml);
  const name = assertSnapshotName(opts.name ?? defaultName());
  // independent reads, in flight together (one round trip instead of several)
  const [xml, existing, { state }] = await Promise.all([dom.xml(VirDomainXMLFlags.VIR_DOMAIN_XML_INACTIVE), listSnapshotSummaries(dom), dom.state()]);
  if (existing.some((s) => s.name === name)) {
    throw new VmctlError('ALREADY_EXISTS', `VM ${vm} already has a snapshot named '${name}'`, { hint: `choose another name, or vmctl snapshot delete ${vm} ${name}` });
  }
  const running = state === 'running' || state === 'paused';
  const disks = snapshotableDisks(xml);
  if (disks.length === 0) throw new VmctlError('UNSUPPORTED', `VM ${vm} has no writable disk to snapshot`);
  const choice = chooseKind({
    running,
    diskOnly: opts.diskOnly === true,
    noMemory: opts.noMemory === true,
    uefi: /<loader[^>]*type=['"]pflash['"]/.test(xml),
    ...(disks.find((d) => d.format !== 'qcow2') ? { rawDisk: disks.find((d) => d.format !== 'qcow2')!.target } : {}),
    hasExternal: existing.some((s) => s.kind === 'external'),
  });
  if (choice.why) op.notice(`snapshot ${name}: ${choice.why}`);
  if (choice.kind === 'external' && !existing.some((s) => s.kind === 'external') && existing.some((s) => s.kind === 'internal')) {
    op.warn(`the internal snapshots of ${vm} (${existing.filter((s) => s.kind === 'internal').map((s) => s.name).join(', ')}) stay in the layer under this one: reverting to them needs the external snapshots above deleted first`);
  }

  // quiesce: only a disk-only snapshot of a running guest needs it (a memory state is consistent by
  // itself), and it gets it by default when the agent answers: without it, files the guest wrote in
  // the last half minute or so (ext4's delayed allocation) come back empty after a revert
  let quiesce = false;
  if (opts.quiesce === true) {
    if (!running) op.notice(`--quiesce: ${vm} is not running, its disks are already consistent`);
    else if (choice.memory) op.notice('--quiesce: not needed, the snapshot holds the memory state (consistent by itself)');
    else quiesce = true;
  } else if (opts.quiesce === undefined) quiesce = running && !choice.memory;

  // external: the files it makes, next to each disk; recorded before they exist
  const files: SnapshotFile[] = [];
  const overlays = new Map<string, string>();
  if (choice.kind === 'external') {
    for (const d of disks) {
      const path = join(dirname(d.source!), `${vm}-${d.target}.${name}.qcow2`);
      overlays.set(d.target, path);
      files.push({ path, role: 'overlay', snapshot: name });
    }
    if (choice.memory) files.push({ path: join(dirname(disks[0]!.source!), `${vm}.${name}.mem`), role: 'memory', snapshot: name });
  }
  const before = parseSnapshotFiles(xml);
  let marker = newMarker('snapshot', op.id, 'record');
  if (files.length > 0) {
    marker = await recordStep(dom, marker, 'record', running);
    await writeSnapshotFiles(dom, [...before, ...files], running);
    op.undo.push(`record of snapshot ${name}'s files`, async (c) => writeSnapshotFiles(await c.lookupDomain(vm), before, running));
    await op.fault('after-record');
  }

  const all = new Set(disks.map((d) => d.target));
  const request = {
    name,
    ...(opts.description !== undefined ? { description: opts.description } : {}),
    kind: choice.kind,
    memory: choice.memory,
    ...(files.find((f) => f.role === 'memory') ? { memoryFile: files.find((f) => f.role === 'memory')!.path } : {}),
    disks: [
      ...disks.map((d) => ({ name: d.target, mode: choice.kind, ...(overlays.has(d.target) ? { overlay: overlays.get(d.target)! } : {}) })),
      // everything else (the seed cdrom, read-only disks) stays out
      ...domainDisks(xml).filter((d) => !all.has(d.target)).map((d) => ({ name: d.target, mode: 'no' as const })),
    ],
  };
  const flags =
    (choice.kind === 'external' ? F.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC : 0) |
    (choice.kind === 'external' && !choice.memory ? F.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY : 0);
  let quiesced = false;
  await op.step('snapshot', async () => {
    if (files.length) await recordStep(dom, marker, 'create', running);
    try {
      await dom.createSnapshot(buildSnapshotXml(request), flags | (quiesce ? F.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE : 0));
      quiesced = quiesce;
    } catch (e) {
      if (!(quiesce && e instanceof LibvirtError && /agent/i.test(e.message))) throw e;
      op.warn(
        `qemu-guest-agent in ${vm} did not answer (${e.message}): the snapshot is taken without freezing the filesystems (crash-consistent: files written in the last ~30 s may be empty after a revert; run qemu-guest-agent in the guest)`,
      );
      await dom.createSnapshot(buildSnapshotXml(request), flags);
    }
  });
  op.undo.commit(); // it exists now: a failure after this point (retention) leaves it
  if (files.length) await clearMarker(dom, running);
  await op.fault('after-create');
  // the new overlays are volumes of the pool now
  if (files.length) await refreshPools(op);

  const pruned: string[] = [];
  if (opts.keep !== undefined) {
    const infos = await listSnapshotInfos(dom);
    const parentOf = new Map(infos.map((s) => [s.name, s.parent]));
    const depth = (n: string | undefined): number => (n === undefined ? 0 : 1 + depth(parentOf.get(n)));
    // oldest first: by creation time, then (same second) ancestors before descendants
    const all2 = infos.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || depth(a.name) - depth(b.name));
    for (const old of all2.slice(0, Math.max(0, all2.length - opts.keep))) {
      if (old.name === name) continue;
      await deleteSnapshotIn(op, dom, old, { children: false, quietChildren: true }).then(
        () => pruned.push(old.name),
        (e: unknown) => op.warn(`--keep: could not delete snapshot ${old.name}: ${(e as Error).message}`),
      );
    }
  }
  return { vm, name, kind: choice.kind, memory: choice.memory, ...(choice.why ? { why: choice.why } : {}), quiesced, files: files.map((f) => f.path), pruned };
}

export type { SnapshotInfo };
export { parseSnapshotXml };
