/**
 * `vmctl delete`: removes a VM vmctl made — complete, or left incomplete by an
 * interrupted command — and exactly what it made: the volumes recorded in its
 * metadata and its client state. The order keeps the record until the end:
 * the domain (with vmctl's metadata naming the volumes) is undefined last, so
 * a delete that is itself interrupted is finished by running it again.
 */
import { rmSync } from 'node:fs';
import { VmctlError } from '../errors.js';
import { vmStateDir } from '../paths.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Connection } from '../../libvirt/connection.js';
import type { OpContext } from '../op/context.js';
import { parseOpMarker, recordStep, newMarker } from '../op/journal.js';
import { removeStaleLease } from '../op/lease.js';
import { parseVmctlMetadata } from './domain-xml.js';
import { findVm, undefineDomain } from './domain.js';
import { parseSnapshotFiles } from '../snapshot/model.js';

export interface DeleteResult {
  removedVolumes: string[];
  /** what the VM was, when an interrupted command had left it incomplete */
  wasIncomplete?: { op: string; step: string };
}

/** `conn`: another host of the operation (op.connection), e.g. where a lab's VM was migrated to. */
export async function deleteVm(op: OpContext, name: string, conn: Connection = op.conn): Promise<DeleteResult> {
  const dom = await findVm(conn, name).catch(async (e: unknown) => {
    // gone already (a delete killed after the undefine): its dead holder's lease goes too
    if (e instanceof VmctlError && e.code === 'NOT_FOUND') await removeStaleLease(conn, `vm/${name}`).catch(() => false);
    throw e;
  });
  if (conn === op.conn) await op.lease(`vm/${name}`, `VM '${name}'`);
  else await op.leaseOn(conn, `vm/${name}`, `VM '${name}' on ${conn.uri.original}`);
  const xml = await dom.xml();
  const meta = parseVmctlMetadata(xml);
  if (!meta) {
    throw new VmctlError('CONFLICT', `VM '${name}' was not created by vmctl (it has no vmctl metadata); vmctl removes only what it made`, {
      hint: `remove it with virsh undefine ${name} (and its volumes yourself)`,
    });
  }
  const before = parseOpMarker(xml);
  const running = (await dom.state()).state !== 'shutoff';
  if (running) await dom.destroy();
  await recordStep(dom, newMarker('delete', op.id, 'volumes'), 'volumes');
  await op.fault('after-mark');
  const removed: string[] = [];
  for (const v of meta.volumes) {
    try {
      const pool = await conn.lookupStoragePool(v.pool);
      const vol = await pool.lookupVolume(v.name);
      await vol.delete();
      removed.push(`${v.pool}/${v.name}`);
    } catch (e) {
      if (e instanceof LibvirtError && e.isNotFound()) continue;
      op.log.warn({ volume: v.name, err: (e as Error).message }, 'could not remove volume');
      throw e;
    }
    await op.fault('after-volume');
  }
  // files vmctl's snapshot commands made (external overlays, memory images, revert overlays)
  const snapFiles = parseSnapshotFiles(xml);
  if (snapFiles.length > 0) {
    for (const p of await conn.listStoragePools()) if (await p.isActive()) await p.refresh().catch(() => undefined);
    for (const f of snapFiles) {
      try {
        const vol = await conn.lookupStorageVolumeByPath(f.path);
        await vol.delete();
        removed.push(`${vol.poolName}/${vol.name}`);
      } catch (e) {
        if (!(e instanceof LibvirtError && e.isNotFound())) throw e;
      }
    }
  }
  rmSync(vmStateDir(conn.uri.original, name), { recursive: true, force: true });
  await undefineDomain(dom);
  return { removedVolumes: removed, ...(before ? { wasIncomplete: { op: before.op, step: before.step } } : {}) };
}
