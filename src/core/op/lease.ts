/**
 * Leases: two vmctl processes never interleave a multi-step change of one
 * object (a VM now; a lab later). A lease is a libvirt secret on the host the
 * object lives on — every client of that host sees it — whose usage name is
 * the object (`vmctl-lease/vm/NAME`). libvirt refuses a second secret with the
 * same usage, which makes taking a lease atomic. The secret's description
 * holds who holds it and until when (JSON); the holder renews it while it
 * works, and it expires if the holder dies: at once when the holder ran on
 * this machine and its process is gone (kill -9), else when the time runs out.
 */
import { xmlBuilder, xmlParser } from '../xml.js';
import { VmctlError } from '../errors.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Connection, Secret } from '../../libvirt/connection.js';
import { VirSecretUsageType } from '../../libvirt/generated/constants.gen.js';
import { currentHolder, describeHolder, holderLiveness, type Holder } from './holder.js';

export const LEASE_PREFIX = 'vmctl-lease/';
/** a lease not renewed for this long is free */
export const LEASE_TTL_MS = 30_000;
const RENEW_EVERY_MS = 10_000;
/** a usage type whose name is free-form; nothing in libvirt or QEMU uses these secrets */
const USAGE = VirSecretUsageType.VIR_SECRET_USAGE_TYPE_TLS;

export interface LeaseRecord extends Holder {
  op: string;
  opId: string;
  /** ISO times */
  since: string;
  expires: string;
}

export interface LeaseInfo {
  resource: string;
  record: LeaseRecord | null;
  state: 'held' | 'stale';
  uuid: string;
}

/** A vmctl record kept on a host: a persistent private secret (usage tls, `usageName`) with JSON in its description. */
export function recordSecretXml(usageName: string, record: unknown, uuid?: string): string {
  return xmlBuilder.build({
    secret: {
      '@_ephemeral': 'no',
      '@_private': 'yes',
      ...(uuid ? { uuid } : {}),
      description: JSON.stringify(record),
      usage: { '@_type': 'tls', name: usageName },
    },
  }) as string;
}

const secretXml = (resource: string, record: LeaseRecord, uuid?: string): string => recordSecretXml(`${LEASE_PREFIX}${resource}`, record, uuid);

export function parseLeaseRecord(xml: string): LeaseRecord | null {
  try {
    const doc = xmlParser.parse(xml) as { secret?: { description?: unknown } };
    const d = doc.secret?.description;
    if (typeof d !== 'string') return null;
    const r = JSON.parse(d) as LeaseRecord;
    return typeof r.pid === 'number' && typeof r.expires === 'string' ? r : null;
  } catch {
    return null;
  }
}

/** Free: expired, or its holder ran here and is gone. */
export function isStale(r: LeaseRecord | null, now = Date.now()): boolean {
  if (!r) return true;
  if (Date.parse(r.expires) < now) return true;
  return holderLiveness(r) === 'dead';
}

const isTaken = (e: unknown) => e instanceof LibvirtError && /already defined for use with/i.test(e.message);
const notFound = (e: unknown) => e instanceof LibvirtError && e.isNotFound();

export class Lease {
  private timer: NodeJS.Timeout | undefined;
  private released = false;

  private constructor(
    private conn: () => Connection,
    readonly resource: string,
    private secret: Secret,
    private record: LeaseRecord,
    private readonly onRenewError: (err: Error) => void,
    private readonly onRenewed: () => void,
  ) {}
  /** the last renewal failed: the next failures of the streak are not reported again */
  private failing = false;

  /**
   * Take the lease on `resource` ('vm/NAME') or fail with CONFLICT naming the
   * holder. A stale lease (holder dead or expired) is taken over.
   */
  static async acquire(
    conn: () => Connection,
    resource: string,
    op: { kind: string; id: string; what: string },
    onRenewError: (err: Error) => void = () => undefined,
    onRenewed: () => void = () => undefined,
  ): Promise<Lease> {
    const now = Date.now();
    const record: LeaseRecord = {
      ...currentHolder(),
      op: op.kind,
      opId: op.id,
      since: new Date(now).toISOString(),
      expires: new Date(now + LEASE_TTL_MS).toISOString(),
    };
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const secret = await conn().defineSecret(secretXml(resource, record));
        const lease = new Lease(conn, resource, secret, record, onRenewError, onRenewed);
        lease.timer = setInterval(() => void lease.renew(), RENEW_EVERY_MS);
        lease.timer.unref();
        return lease;
      } catch (e) {
        if (!isTaken(e)) throw e;
      }
      let existing: Secret;
      try {
        existing = await conn().lookupSecretByUsage(USAGE, `${LEASE_PREFIX}${resource}`);
      } catch (e) {
        if (notFound(e)) continue; // released meanwhile
        throw e;
      }
      const held = parseLeaseRecord(await existing.xml());
      if (isStale(held)) {
        await existing.undefine().catch((e: unknown) => {
          if (!notFound(e)) throw e;
        });
        continue;
      }
      throw new VmctlError('CONFLICT', `${op.what} is busy: vmctl ${held!.op} by ${describeHolder(held!)} since ${held!.since}`, {
        hint: `wait for that command to finish; if it is gone, its lock expires by ${held!.expires}`,
        details: { lease: held },
      });
    }
    throw new VmctlError('CONFLICT', `${op.what}: could not take its lock (it changed hands several times)`, { hint: 'retry' });
  }

  private async renew(): Promise<void> {
    if (this.released) return;
    const record = { ...this.record, expires: new Date(Date.now() + LEASE_TTL_MS).toISOString() };
    try {
      this.secret = await this.conn().defineSecret(secretXml(this.resource, record, this.secret.uuidString));
      this.record = record;
      if (this.failing) {
        this.failing = false;
        this.onRenewed();
      }
    } catch (e) {
      // once per streak (the daemon down for a while would repeat it every RENEW_EVERY_MS)
      if (!this.failing) {
        this.failing = true;
        this.onRenewError(e as Error);
      }
    }
  }

  /** Give the lease back (idempotent; a lease gone with the daemon's state is fine). */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.timer) clearInterval(this.timer);
    try {
      const conn = this.conn();
      const current = await conn.lookupSecretByUsage(USAGE, `${LEASE_PREFIX}${this.resource}`);
      // only our own: a lease taken over after we were presumed dead is not ours to remove
      if (parseLeaseRecord(await current.xml())?.opId === this.record.opId) await current.undefine();
    } catch (e) {
      if (!notFound(e)) throw e;
    }
  }
}

/**
 * Remove the lease on `resource` when it is stale (its holder died: kill -9 after it removed the
 * object, so no later command takes that lease over); a held one is left alone. True when removed.
 */
export async function removeStaleLease(conn: Connection, resource: string): Promise<boolean> {
  try {
    const s = await conn.lookupSecretByUsage(USAGE, `${LEASE_PREFIX}${resource}`);
    if (!isStale(parseLeaseRecord(await s.xml()))) return false;
    await s.undefine();
    return true;
  } catch (e) {
    if (notFound(e)) return false;
    throw e;
  }
}

/** Every vmctl lease on a host (for `host check`). */
export async function listLeases(conn: Connection): Promise<LeaseInfo[]> {
  const out: LeaseInfo[] = [];
  for (const s of await conn.listSecrets()) {
    if (s.usageType !== USAGE || !s.usageId.startsWith(LEASE_PREFIX)) continue;
    const record = parseLeaseRecord(await s.xml());
    out.push({ resource: s.usageId.slice(LEASE_PREFIX.length), record, state: isStale(record) ? 'stale' : 'held', uuid: s.uuidString });
  }
  return out;
}
