/**
 * Live migration through libvirt's migration protocol, version 3 with typed
 * parameters (what virDomainMigrate3 / virDomainMigrateToURI3 do inside the C
 * client):
 *
 * - peer-to-peer (and tunnelled): one call on the source,
 *   Perform3Params(dconnuri); the source daemon drives the destination itself.
 * - client-driven ("direct", virsh without --p2p): this process drives both
 *   daemons, Begin3 (source) → Prepare3 (destination) → Perform3 (source) →
 *   Finish3 (destination) → Confirm3 (source), handing each step's cookie to
 *   the next. A failure after Prepare is reported to the other side as
 *   `cancelled`, so neither daemon keeps half a migration.
 *
 * Also the knobs of a running migration job (max downtime, speed, post-copy).
 */
import type { TypedParam } from '../generated/remote.gen.js';
import { VirDomainMigrateFlags } from '../generated/constants.gen.js';
import type { Connection } from '../connection.js';
import { Domain } from './domain.js';

/** VIR_MIGRATE_PARAM_* (libvirt-domain.h #defines) */
export const MIGRATE_PARAM = {
  URI: 'migrate_uri',
  DEST_NAME: 'destination_name',
  DEST_XML: 'destination_xml',
  PERSIST_XML: 'persistent_xml',
  BANDWIDTH: 'bandwidth',
  BANDWIDTH_POSTCOPY: 'bandwidth.postcopy',
  LISTEN_ADDRESS: 'listen_address',
  MIGRATE_DISKS: 'migrate_disks',
  DISKS_PORT: 'disks_port',
  COMPRESSION: 'compression',
  AUTO_CONVERGE_INITIAL: 'auto_converge.initial',
} as const;

export interface MigrateParams {
  uri?: string;
  destName?: string;
  destXml?: string;
  persistXml?: string;
  /** MiB/s */
  bandwidthMiB?: number;
  listenAddress?: string;
  /** disk targets to copy (with NON_SHARED_DISK/INC) */
  migrateDisks?: string[];
  compression?: string[];
}

export function migrateTypedParams(p: MigrateParams): TypedParam[] {
  const out: TypedParam[] = [];
  const str = (field: string, s: string) => out.push({ field, value: { type: 7, s } });
  if (p.uri) str(MIGRATE_PARAM.URI, p.uri);
  if (p.destName) str(MIGRATE_PARAM.DEST_NAME, p.destName);
  if (p.destXml) str(MIGRATE_PARAM.DEST_XML, p.destXml);
  if (p.persistXml) str(MIGRATE_PARAM.PERSIST_XML, p.persistXml);
  if (p.listenAddress) str(MIGRATE_PARAM.LISTEN_ADDRESS, p.listenAddress);
  if (p.bandwidthMiB !== undefined) out.push({ field: MIGRATE_PARAM.BANDWIDTH, value: { type: 4, ul: BigInt(p.bandwidthMiB) } });
  for (const d of p.migrateDisks ?? []) str(MIGRATE_PARAM.MIGRATE_DISKS, d);
  for (const c of p.compression ?? []) str(MIGRATE_PARAM.COMPRESSION, c);
  return out;
}

export const MigrateFlags = VirDomainMigrateFlags;

/** Peer-to-peer (or tunnelled): the source daemon migrates to `dconnuri` itself. Resolves when the migration ended. */
export async function migratePeerToPeer(dom: Domain, dconnuri: string, params: MigrateParams, flags: number): Promise<void> {
  await dom.conn.remote.domainMigratePerform3Params({
    dom: dom.ref,
    dconnuri,
    params: migrateTypedParams(params),
    cookieIn: Buffer.alloc(0),
    flags: flags | VirDomainMigrateFlags.VIR_MIGRATE_PEER2PEER,
  });
}

/** Which step of a client-driven migration failed (and whether the guest may have moved). */
export class DirectMigrationError extends Error {
  constructor(
    readonly step: 'begin' | 'prepare' | 'perform' | 'finish' | 'confirm',
    override readonly cause: unknown,
    /** true when the destination may run the guest (finish succeeded, confirm failed) */
    readonly mayHaveMoved: boolean,
  ) {
    super(`${step}: ${(cause as Error)?.message ?? String(cause)}`);
  }
}

/**
 * Client-driven migration of `dom` to the daemon behind `dst` (both
 * connections held by this process). Returns the domain on the destination.
 * `onPrepared` runs once the destination is ready (e.g. to start watching).
 */
export async function migrateDirect(dom: Domain, dst: Connection, params: MigrateParams, flags: number, hooks: { onPerform?: () => void } = {}): Promise<Domain> {
  const F = VirDomainMigrateFlags;
  const src = dom.conn;
  flags &= ~(F.VIR_MIGRATE_PEER2PEER | F.VIR_MIGRATE_TUNNELLED);
  flags |= F.VIR_MIGRATE_CHANGE_PROTECTION;
  // what the destination must not see (libvirt's virDomainMigrateVersion3Full does the same)
  const destFlags = flags & ~(F.VIR_MIGRATE_ABORT_ON_ERROR | F.VIR_MIGRATE_AUTO_CONVERGE);
  const p: MigrateParams = { ...params, destName: params.destName ?? dom.name };
  let begin;
  try {
    begin = await src.remote.domainMigrateBegin3Params({ dom: dom.ref, params: migrateTypedParams(p), flags });
  } catch (e) {
    throw new DirectMigrationError('begin', e, false);
  }
  if (!p.destXml) p.destXml = begin.xml;
  let prep;
  try {
    prep = await dst.remote.domainMigratePrepare3Params({ params: migrateTypedParams(p), cookieIn: begin.cookieOut, flags: destFlags });
  } catch (e) {
    // the source still runs the job begun by Begin3: confirm it as cancelled
    await src.remote.domainMigrateConfirm3Params({ dom: dom.ref, params: migrateTypedParams(p), cookieIn: Buffer.alloc(0), flags, cancelled: 1 }).catch(() => undefined);
    throw new DirectMigrationError('prepare', e, false);
  }
  // the destination may pick the port (and the address): its answer wins, as in libvirt's client
  if (prep.uriOut) p.uri = prep.uriOut;
  let perform: Buffer;
  let performError: unknown;
  try {
    hooks.onPerform?.();
    perform = (await src.remote.domainMigratePerform3Params({ dom: dom.ref, dconnuri: null, params: migrateTypedParams(p), cookieIn: prep.cookieOut, flags })).cookieOut;
  } catch (e) {
    performError = e;
    perform = Buffer.alloc(0);
  }
  const cancelled = performError !== undefined ? 1 : 0;
  let finished: { dom: Domain; cookie: Buffer } | undefined;
  let finishError: unknown;
  try {
    const r = await dst.remote.domainMigrateFinish3Params({ params: migrateTypedParams(p), cookieIn: perform, flags: destFlags, cancelled });
    finished = { dom: new Domain(dst, r.dom), cookie: r.cookieOut };
  } catch (e) {
    finishError = e;
  }
  try {
    await src.remote.domainMigrateConfirm3Params({ dom: dom.ref, params: migrateTypedParams(p), cookieIn: finished?.cookie ?? Buffer.alloc(0), flags, cancelled: finished && !performError ? 0 : 1 });
  } catch (e) {
    if (finished && !performError) throw new DirectMigrationError('confirm', e, true);
  }
  if (performError !== undefined) throw new DirectMigrationError('perform', performError, false);
  if (!finished) throw new DirectMigrationError('finish', finishError, false);
  return finished.dom;
}

export async function setMigrateMaxDowntime(dom: Domain, ms: number): Promise<void> {
  await dom.conn.remote.domainMigrateSetMaxDowntime({ dom: dom.ref, downtime: BigInt(ms), flags: 0 });
}

/** MiB/s (0: unlimited) */
export async function setMigrateMaxSpeed(dom: Domain, mib: number, flags = 0): Promise<void> {
  await dom.conn.remote.domainMigrateSetMaxSpeed({ dom: dom.ref, bandwidth: BigInt(mib), flags });
}

/** Switch a running migration (started with VIR_MIGRATE_POSTCOPY) to post-copy. */
export async function startPostCopy(dom: Domain): Promise<void> {
  await dom.conn.remote.domainMigrateStartPostCopy({ dom: dom.ref, flags: 0 });
}

/** The migrated domain on the destination (by name). */
export async function lookupAfter(dst: Connection, name: string): Promise<Domain> {
  return new Domain(dst, (await dst.remote.domainLookupByName({ name })).dom);
}
