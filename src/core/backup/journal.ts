/**
 * The intent record of a backup on the host: before a backup creates anything
 * there (scratch volumes, a checkpoint, a block job), it writes what it is
 * about to make into the domain's metadata — a `vmctlbak:job` element in its
 * own namespace (not the `vmctlop:op` marker: the VM stays complete and usable
 * while it is backed up). A later backup of the same VM that finds a record
 * whose holder is gone removes exactly what it names: aborts the backup job,
 * deletes the checkpoint (unless a finished point of the set uses it), the
 * scratch volumes and a pull-mode job's socket directory, then clears the record.
 */
import { xmlBuilder, xmlParserWith } from '../xml.js';
import type { Connection, Domain } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VirDomainModificationImpact } from '../../libvirt/generated/constants.gen.js';
import { currentHolder, holderLiveness, type Holder } from '../op/holder.js';

export const BACKUP_XMLNS = 'https://vmctl.dev/xmlns/backup/1';
const PREFIX = 'vmctlbak';

export interface BackupJobRecord extends Holder {
  opId: string;
  step: string;
  since: string;
  /** the backup set directory on the client */
  dir: string;
  pointId: string;
  /** the checkpoint the backup creates ('' when none) */
  checkpoint: string;
  pool: string;
  /** scratch volume names in `pool`, comma-separated */
  scratch: string;
  /** a pull-mode backup's socket directory on the machine running vmctl ('' for push mode) */
  nbd?: string;
}

const parser = xmlParserWith(() => false);

function flags(running: boolean): number {
  const F = VirDomainModificationImpact;
  return running ? F.VIR_DOMAIN_AFFECT_LIVE | F.VIR_DOMAIN_AFFECT_CONFIG : F.VIR_DOMAIN_AFFECT_CONFIG;
}

export function newJobRecord(r: Omit<BackupJobRecord, keyof Holder | 'since'>): BackupJobRecord {
  return { ...r, since: new Date().toISOString(), ...currentHolder() };
}

export async function writeJobRecord(dom: Domain, r: BackupJobRecord, running: boolean): Promise<void> {
  const attrs: Record<string, string> = {};
  for (const [k, v] of Object.entries(r)) if (v !== undefined) attrs[`@_${k}`] = String(v);
  await dom.setMetadataElement(BACKUP_XMLNS, PREFIX, (xmlBuilder.build({ job: attrs }) as string).trim(), flags(running));
}

export async function clearJobRecord(dom: Domain, running: boolean): Promise<void> {
  await dom.setMetadataElement(BACKUP_XMLNS, PREFIX, null, flags(running));
  if (running) {
    // the persistent definition may carry it too (written while running)
    await dom.setMetadataElement(BACKUP_XMLNS, PREFIX, null, flags(false)).catch(() => undefined);
  }
}

export function parseJobRecord(domainXml: string): BackupJobRecord | null {
  const doc = parser.parse(domainXml) as { domain?: { metadata?: Record<string, unknown> } };
  const md = doc.domain?.metadata;
  if (!md || typeof md !== 'object') return null;
  for (const [k, v] of Object.entries(md)) {
    if (!v || typeof v !== 'object') continue;
    const node = v as Record<string, unknown>;
    const prefix = k.includes(':') ? k.slice(0, k.indexOf(':')) : '';
    if (!k.endsWith('job') || node[prefix ? `@_xmlns:${prefix}` : '@_xmlns'] !== BACKUP_XMLNS) continue;
    const a = (n: string) => (typeof node[`@_${n}`] === 'string' ? (node[`@_${n}`] as string) : '');
    return {
      opId: a('opId'),
      step: a('step'),
      since: a('since'),
      dir: a('dir'),
      pointId: a('pointId'),
      checkpoint: a('checkpoint'),
      pool: a('pool'),
      scratch: a('scratch'),
      ...(a('nbd') ? { nbd: a('nbd') } : {}),
      user: a('user') || '?',
      host: a('host') || '?',
      pid: Number(a('pid')) || 0,
      ...(a('bootId') ? { bootId: a('bootId') } : {}),
      ...(a('startTicks') ? { startTicks: a('startTicks') } : {}),
    };
  }
  return null;
}

export const jobLiveness = (r: BackupJobRecord) => holderLiveness(r);

/** Remove the scratch volumes a record names (missing ones are fine). */
export async function deleteScratch(conn: Connection, pool: string, names: string[]): Promise<void> {
  if (names.length === 0) return;
  const p = await conn.lookupStoragePool(pool);
  for (const n of names) {
    try {
      await (await p.lookupVolume(n)).delete();
    } catch (e) {
      if (!(e instanceof LibvirtError && e.isNotFound())) throw e;
    }
  }
}
