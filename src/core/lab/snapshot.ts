/**
 * Lab snapshots: one snapshot of every VM of a lab, consistent (all VMs
 * paused, each snapshot taken, all resumed) and all or nothing — if one VM's
 * snapshot fails, the ones already taken are deleted. The intent (name, the
 * VMs paused) is in the lab's record first, so after kill -9 the next lab
 * command resumes the paused VMs and removes the half-taken snapshot.
 * `lab reset` reverts every VM to one of them (default: the baseline).
 */
import { VmctlError } from '../errors.js';
import { assertSnapshotName } from '../names.js';
import type { OpContext } from '../op/context.js';
import { lookupVm } from '../vm/domain.js';
import { createSnapshot } from '../snapshot/create.js';
import { deleteSnapshot } from '../snapshot/remove.js';
import { revertSnapshot } from '../snapshot/revert.js';
import { listSnapshotInfos } from '../snapshot/list.js';
import { opStamp, mustReadLabRecord, readLabRecord, writeLabRecord, type LabRecord } from './record.js';

async function save(op: OpContext, r: LabRecord): Promise<LabRecord> {
  const cur = await readLabRecord(op.conn, r.id);
  await writeLabRecord(op.conn, r, cur?.secret.uuidString);
  return r;
}

/** Finish what an interrupted lab snapshot left: resume the VMs it paused, remove its snapshot from every VM. */
export async function settleLab(op: OpContext, record: LabRecord): Promise<LabRecord> {
  const p = record.pending;
  if (!p) return record;
  op.notice(`lab ${record.id}: an earlier lab snapshot '${p.snapshot}' was interrupted; removing it and resuming the VMs it paused`);
  await removeSnapshotEverywhere(op, record, p.snapshot);
  for (const key of p.paused) {
    const v = record.vms.find((x) => x.key === key);
    const dom = v ? await lookupVm(op.conn, v.name) : undefined;
    if (dom && (await dom.state()).state === 'paused') await dom.resume();
  }
  const { pending: _gone, ...rest } = record;
  return save(op, { ...rest, snapshots: record.snapshots.filter((s) => s.name !== p.snapshot) });
}

async function removeSnapshotEverywhere(op: OpContext, record: LabRecord, name: string): Promise<void> {
  await Promise.all(
    record.vms.map(async (v) => {
      const dom = await lookupVm(op.conn, v.name);
      if (!dom) return;
      if (!(await listSnapshotInfos(dom)).some((s) => s.name === name)) return;
      const sub = op.scoped(v.key, { ownUndo: true });
      await deleteSnapshot(sub, v.name, name);
      sub.undo.commit();
    }),
  );
}

/** Take snapshot `name` of every VM of the lab (record updated through onRecord). */
export async function takeLabSnapshot(op: OpContext, record: LabRecord, name: string, o: { onRecord?: (r: LabRecord) => Promise<void> } = {}): Promise<LabRecord> {
  assertSnapshotName(name);
  if (record.snapshots.some((s) => s.name === name)) {
    throw new VmctlError('ALREADY_EXISTS', `lab ${record.id} already has a snapshot named '${name}'`, { hint: 'choose another name, or vmctl lab snapshot-delete first' });
  }
  const conn = op.conn;
  const doms = await Promise.all(
    record.vms.map(async (v) => {
      const dom = await lookupVm(conn, v.name);
      if (!dom || dom.uuidString !== v.uuid) throw new VmctlError('CONFLICT', `lab ${record.id}: VM ${v.name} is missing`, { hint: `vmctl lab down ${record.lab} --prefix ${record.prefix}, then lab up` });
      return { v, dom };
    }),
  );
  // 1. intent: which VMs get paused
  const running = [];
  for (const d of doms) if ((await d.dom.state()).state === 'running') running.push(d);
  let r = await save(op, { ...record, pending: { snapshot: name, paused: running.map((d) => d.v.key) }, op: opStamp('lab-snapshot', op.id) });
  await o.onRecord?.(r);
  const taken: string[] = [];
  try {
    // 2. pause all (one consistent instant for the whole lab), then snapshot each
    await Promise.all(running.map((d) => d.dom.suspend()));
    op.phase('paused', `${running.length} VM(s)`);
    await op.fault('after-pause');
    const settled = await Promise.allSettled(
      doms.map(async ({ v }) => {
        const sub = op.scoped(v.key, { ownUndo: true });
        try {
          await createSnapshot(sub, v.name, { name, description: `lab ${record.id} snapshot ${name}` });
          taken.push(v.key);
          await sub.fault(`after-snapshot-${v.key}`);
        } catch (e) {
          await sub.unwindOwn();
          throw e;
        }
        sub.undo.commit();
      }),
    );
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      // all or nothing: the snapshots already taken go too
      for (const key of taken) {
        const v = record.vms.find((x) => x.key === key)!;
        const sub = op.scoped(key, { ownUndo: true });
        await deleteSnapshot(sub, v.name, name).then(
          () => op.emit({ type: 'undo', what: `snapshot ${name} of ${key}`, ok: true }),
          (e: unknown) => op.emit({ type: 'undo', what: `snapshot ${name} of ${key}`, ok: false, error: (e as Error).message }),
        );
      }
      throw failed.reason;
    }
  } finally {
    await Promise.all(running.map(async (d) => ((await d.dom.state()).state === 'paused' ? d.dom.resume() : undefined)));
  }
  const { pending: _done, ...rest } = r;
  r = await save(op, { ...rest, snapshots: [...record.snapshots, { name, createdAt: new Date().toISOString() }] });
  await o.onRecord?.(r);
  op.phase('snapshot', `${name} of ${doms.length} VM(s)`);
  return r;
}

async function readyRecord(op: OpContext, id: string): Promise<LabRecord> {
  const found = await mustReadLabRecord(op.conn, id);
  await op.lease(`lab/${id}`, `lab '${id}'`);
  let r = found.record;
  if (r.state !== 'ready') throw new VmctlError('CONFLICT', `lab ${id} is not up (an interrupted vmctl ${r.op.kind} left it ${r.state})`, { hint: `vmctl lab down ${r.lab} --prefix ${r.prefix} removes what it made` });
  r = await settleLab(op, r);
  return r;
}

export async function labSnapshot(op: OpContext, id: string, name: string): Promise<{ id: string; snapshot: string; vms: string[] }> {
  const r = await readyRecord(op, id);
  await takeLabSnapshot(op, r, name);
  return { id, snapshot: name, vms: r.vms.map((v) => v.key) };
}

export async function labReset(op: OpContext, id: string, name = 'baseline'): Promise<{ id: string; snapshot: string; vms: string[] }> {
  const r = await readyRecord(op, id);
  const snap = r.snapshots.find((s) => s.name === name);
  if (!snap) {
    throw new VmctlError('NOT_FOUND', `lab ${id} has no snapshot '${name}'`, { hint: `its snapshots: ${r.snapshots.map((s) => s.name).join(', ') || 'none'}` });
  }
  if (snap.lacks?.length) {
    throw new VmctlError('CONFLICT', `lab snapshot '${name}' of ${id} was taken before ${snap.lacks.join(', ')} ${snap.lacks.length === 1 ? 'was' : 'were'} replaced, so it does not hold ${snap.lacks.length === 1 ? 'that VM' : 'those VMs'}`, {
      hint: `reset to baseline, or take a new lab snapshot (vmctl lab snapshot ${r.lab} NAME --prefix ${r.prefix})`,
    });
  }
  await Promise.all(
    r.vms.map(async (v) => {
      const sub = op.scoped(v.key, { ownUndo: true });
      await revertSnapshot(sub, v.name, name, { state: 'running' });
      sub.undo.commit();
      op.phase('reset', v.key);
    }),
  );
  return { id, snapshot: name, vms: r.vms.map((v) => v.key) };
}

export async function labSnapshotDelete(op: OpContext, id: string, name: string): Promise<{ id: string; snapshot: string }> {
  const r = await readyRecord(op, id);
  if (!r.snapshots.some((s) => s.name === name)) throw new VmctlError('NOT_FOUND', `lab ${id} has no snapshot '${name}'`);
  await removeSnapshotEverywhere(op, r, name);
  await save(op, { ...r, snapshots: r.snapshots.filter((s) => s.name !== name) });
  return { id, snapshot: name };
}
