/**
 * A lab's record on its host: what `lab up` made (networks and VMs, by name
 * and UUID), its snapshots, the file it came from, whether its host-side
 * commands are trusted, and the state of the last command that changed it.
 * It is a libvirt secret (usage type tls, usage name `vmctl-lab/<id>`, the
 * record as JSON in its description), like leases: it lives where the lab
 * lives, works over any connection, and is written *before* each change, so
 * a lab interrupted at any instant (kill -9) is known and `lab down` removes
 * exactly what it made — a network or VM vmctl did not record is never touched.
 */
import type { Connection, Domain, Secret } from '../../libvirt/connection.js';
import { VmctlError } from '../errors.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VirSecretUsageType } from '../../libvirt/generated/constants.gen.js';
import { xmlParser } from '../xml.js';
import { lookupVm } from '../vm/domain.js';
import { recordSecretXml } from '../op/lease.js';
import { currentHolder, holderLiveness, type Holder } from '../op/holder.js';

const USAGE = VirSecretUsageType.VIR_SECRET_USAGE_TYPE_TLS;
export const LAB_RECORD_PREFIX = 'vmctl-lab/';

export interface LabRecordNetwork {
  key: string;
  name: string;
  uuid: string;
  subnet: string;
  mode: 'isolated' | 'nat';
}

export interface LabRecordVm {
  key: string;
  name: string;
  uuid: string;
}

export interface LabRecord {
  v: 1;
  id: string;
  lab: string;
  prefix: string;
  file: string;
  sha256: string;
  shipped: boolean;
  trusted: boolean;
  peers: Record<string, string>;
  /** creating: `lab up` has not finished; ready: all up; removing: `lab down` has begun */
  state: 'creating' | 'ready' | 'removing';
  /** the command that last changed the lab and who ran it */
  op: { kind: string; id: string; since: string } & Holder;
  networks: LabRecordNetwork[];
  vms: LabRecordVm[];
  /** lab snapshots (taken on every VM), oldest first; `baseline` is lab up's */
  /** VMs lab up gave 1 vCPU (TCG, more vCPUs asked for than the host has): a replacement gets the same */
  oneCpu?: string[];
  snapshots: { name: string; createdAt: string; /** VMs replaced (lab up) after it was taken: not in it */ lacks?: string[] }[];
  /** a lab snapshot being taken: the VMs paused for it (resumed, and the snapshot removed everywhere, if it was interrupted) */
  pending?: { snapshot: string; paused: string[] };
  createdAt: string;
}

const secretXml = (record: LabRecord, uuid?: string): string => recordSecretXml(`${LAB_RECORD_PREFIX}${record.id}`, record, uuid);

export function parseLabRecord(xml: string): LabRecord | null {
  try {
    const d = (xmlParser.parse(xml) as { secret?: { description?: unknown } }).secret?.description;
    if (typeof d !== 'string') return null;
    const r = JSON.parse(d) as LabRecord;
    return r.v === 1 && typeof r.id === 'string' && Array.isArray(r.vms) && Array.isArray(r.networks) ? r : null;
  } catch {
    return null;
  }
}

const notFound = (e: unknown) => e instanceof LibvirtError && e.isNotFound();

/** The lab's record and its secret, or undefined. */
export async function readLabRecord(conn: Connection, id: string): Promise<{ record: LabRecord; secret: Secret } | undefined> {
  let secret: Secret;
  try {
    secret = await conn.lookupSecretByUsage(USAGE, `${LAB_RECORD_PREFIX}${id}`);
  } catch (e) {
    if (notFound(e)) return undefined;
    throw e;
  }
  const record = parseLabRecord(await secret.xml());
  return record ? { record, secret } : undefined;
}

/**
 * The record of lab `id`, or NOT_FOUND naming the fix: when a lab of that name is there under
 * another prefix (or the name given was an id, prefix included), the command that reaches it.
 */
export async function mustReadLabRecord(conn: Connection, id: string): Promise<{ record: LabRecord; secret: Secret }> {
  const found = await readLabRecord(conn, id);
  if (found) return found;
  const near = (await listLabRecords(conn)).filter((r) => id.endsWith(`-${r.lab}`));
  throw new VmctlError('NOT_FOUND', `no lab '${id}' on ${conn.uri.original}`, {
    hint: near.length > 0 ? `there is ${near.map((r) => `lab ${r.lab} with --prefix ${r.prefix}`).join(', and ')}: give the lab's name and that --prefix` : 'vmctl lab list shows the labs there (and their prefixes)',
  });
}

/** Write (create or replace) the record; durable on the host when this returns. */
export async function writeLabRecord(conn: Connection, record: LabRecord, uuid?: string): Promise<Secret> {
  return conn.defineSecret(secretXml(record, uuid));
}

export async function removeLabRecord(conn: Connection, id: string): Promise<void> {
  const r = await readLabRecord(conn, id);
  if (r) await r.secret.undefine().catch((e: unknown) => (notFound(e) ? undefined : Promise.reject(e)));
}

/** Every lab on the host. */
export async function listLabRecords(conn: Connection): Promise<LabRecord[]> {
  const out: LabRecord[] = [];
  for (const s of await conn.listSecrets()) {
    if (s.usageType !== USAGE || !s.usageId.startsWith(LAB_RECORD_PREFIX)) continue;
    const r = parseLabRecord(await s.xml().catch(() => ''));
    if (r) out.push(r);
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

export function opStamp(kind: string, id: string): LabRecord['op'] {
  return { kind, id, since: new Date().toISOString(), ...currentHolder() };
}

/** whether the command that last wrote the record still runs (a `creating` lab whose command is gone is interrupted) */
export function recordLiveness(r: LabRecord): 'alive' | 'dead' | 'unknown' {
  return holderLiveness(r.op);
}

/**
 * A lab VM that is not on the lab's host: migrated to one of the lab's peers (a migration drill),
 * where the same UUID is the lab's. `open` gives a peer's connection, undefined when unreachable.
 */
export async function findOnPeers(
  r: LabRecord,
  v: LabRecordVm,
  open: (peer: string, uri: string) => Promise<Connection | undefined>,
): Promise<{ peer: string; conn: Connection; dom: Domain } | undefined> {
  for (const [peer, uri] of Object.entries(r.peers)) {
    const conn = await open(peer, uri);
    const dom = conn ? await lookupVm(conn, v.name).catch(() => undefined) : undefined;
    if (conn && dom && dom.uuidString === v.uuid) return { peer, conn, dom };
  }
  return undefined;
}
