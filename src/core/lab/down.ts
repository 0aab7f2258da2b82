/**
 * `vmctl lab down`: removes exactly what the lab's record names — its VMs
 * (through `vmctl delete`: domain, volumes, snapshot files, client state), its
 * networks — each only when its UUID is the recorded one, then the record.
 * The record says `removing` first, so an interrupted down is finished by
 * running it again (or by the next `lab up`).
 */
import { LibvirtError } from '../../libvirt/errors.js';
import type { OpContext } from '../op/context.js';
import { lookupVm } from '../vm/domain.js';
import { deleteVm } from '../vm/remove.js';
import { removeStaleLease } from '../op/lease.js';
import { findOnPeers, opStamp, mustReadLabRecord, readLabRecord, removeLabRecord, writeLabRecord, type LabRecord } from './record.js';

const notFound = (e: unknown) => e instanceof LibvirtError && e.isNotFound();

export interface LabDownResult {
  id: string;
  removedVms: string[];
  removedNetworks: string[];
  /** recorded things that were gone already */
  missing: string[];
  /** VMs or networks of the lab's names that are not the lab's (left alone) */
  leftAlone: string[];
}

export async function teardownLab(op: OpContext, record: LabRecord): Promise<LabDownResult> {
  const conn = op.conn;
  const r = await readLabRecord(conn, record.id);
  if (r) await writeLabRecord(conn, { ...r.record, state: 'removing', op: opStamp('lab-down', op.id) }, r.secret.uuidString);
  await op.fault('after-mark');
  const out: LabDownResult = { id: record.id, removedVms: [], removedNetworks: [], missing: [], leftAlone: [] };
  // VMs side by side (each delete takes the VM's lease)
  await Promise.all(
    record.vms.map(async (v) => {
      const dom = await lookupVm(conn, v.name);
      if (!dom) {
        const there = await findOnPeers(record, v, (peer, uri) =>
          op.connection(uri).catch((e: unknown) => {
            op.warn(`lab ${record.id}: cannot reach peer ${peer} (${uri}) to look for ${v.name}: ${(e as Error).message}`);
            return undefined;
          }),
        );
        if (!there) {
          // removed by an earlier, killed lab down: so may its dead holder's lease on the VM be
          if (await removeStaleLease(conn, `vm/${v.name}`).catch(() => false)) op.log.debug({ vm: v.name }, 'removed a stale lease');
          return void out.missing.push(v.name);
        }
        await deleteVm(op.scoped(v.key), v.name, there.conn);
        out.removedVms.push(`${v.name} (on ${there.peer})`);
        op.phase('removed', `${v.key} on ${there.peer}`);
        return;
      }
      if (dom.uuidString !== v.uuid) return void out.leftAlone.push(v.name);
      await deleteVm(op.scoped(v.key), v.name);
      out.removedVms.push(v.name);
      op.phase('removed', v.key);
    }),
  );
  await op.fault('after-vms');
  for (const n of record.networks) {
    try {
      const net = await conn.lookupNetwork(n.name);
      if (net.uuidString !== n.uuid) {
        out.leftAlone.push(n.name);
        continue;
      }
      if (await net.isActive()) await net.destroy();
      await net.undefine();
      out.removedNetworks.push(n.name);
    } catch (e) {
      if (!notFound(e)) throw e;
      out.missing.push(n.name);
    }
  }
  await removeLabRecord(conn, record.id);
  return out;
}

export async function labDown(op: OpContext, id: string): Promise<LabDownResult> {
  const r = await mustReadLabRecord(op.conn, id);
  await op.lease(`lab/${id}`, `lab '${id}'`);
  return teardownLab(op, r.record);
}
