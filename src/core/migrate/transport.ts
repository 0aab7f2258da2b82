/**
 * The migration call per mode: peer-to-peer and tunnelled (the source daemon
 * drives the destination: one call), or client-driven (`--direct`: vmctl
 * drives both daemons through the five protocol steps, see
 * src/libvirt/objects/migration.ts). Resolves with the guest on the destination.
 */
import type { Connection, Domain, MigrateParams } from '../../libvirt/connection.js';
import { DirectMigrationError, lookupAfter, migrateDirect, migratePeerToPeer } from '../../libvirt/connection.js';
import { VmctlError } from '../errors.js';
import type { MigratePlan } from './types.js';

export interface MoveParams {
  destXml?: string;
  persistXml?: string;
  migrateDisks?: string[];
}

export async function runMigration(plan: MigratePlan, dom: Domain, dst: Connection, extra: MoveParams): Promise<Domain> {
  const o = plan.internal.opts;
  const params: MigrateParams = {
    ...(o.migrateUri ? { uri: o.migrateUri } : {}),
    ...(o.bandwidthMiB !== undefined ? { bandwidthMiB: o.bandwidthMiB } : {}),
    ...(extra.destXml ? { destXml: extra.destXml } : {}),
    ...(extra.persistXml ? { persistXml: extra.persistXml } : {}),
    ...(extra.migrateDisks ? { migrateDisks: extra.migrateDisks } : {}),
  };
  if (plan.mode === 'direct') {
    try {
      return await migrateDirect(dom, dst, params, plan.flags);
    } catch (e) {
      if (e instanceof DirectMigrationError) {
        throw new VmctlError('LIBVIRT', `${e.step} step: ${(e.cause as Error)?.message ?? String(e.cause)}`, { cause: e.cause, details: { step: e.step, mayHaveMoved: e.mayHaveMoved } });
      }
      throw e;
    }
  }
  await migratePeerToPeer(dom, plan.to, params, plan.flags);
  return lookupAfter(dst, plan.name);
}
