/**
 * Domain checkpoints (dirty bitmaps in qcow2 disks) and push-mode backups
 * (virDomainBackupBegin), plus the guest agent's filesystem freeze/thaw that
 * makes such a backup consistent. Used through Domain's methods.
 */
import type { NonnullDomainCheckpoint } from '../generated/remote.gen.js';
import type { Domain } from './domain.js';

export class Checkpoint {
  readonly name: string;
  constructor(
    readonly domain: Domain,
    readonly ref: NonnullDomainCheckpoint,
  ) {
    this.name = ref.name;
  }

  async xml(flags = 0): Promise<string> {
    return (await this.domain.conn.remote.domainCheckpointGetXmlDesc({ checkpoint: this.ref, flags })).xml;
  }

  /** flags: VIR_DOMAIN_CHECKPOINT_DELETE_* (0: merge its bitmap into the parent's) */
  async delete(flags = 0): Promise<void> {
    await this.domain.conn.remote.domainCheckpointDelete({ checkpoint: this.ref, flags });
  }
}

export async function createCheckpoint(dom: Domain, xml: string, flags = 0): Promise<Checkpoint> {
  const r = await dom.conn.remote.domainCheckpointCreateXml({ dom: dom.ref, xmlDesc: xml, flags });
  return new Checkpoint(dom, r.checkpoint);
}

export async function listCheckpoints(dom: Domain, flags = 0): Promise<Checkpoint[]> {
  const r = await dom.conn.remote.domainListAllCheckpoints({ dom: dom.ref, needResults: 1, flags });
  return r.checkpoints.map((c) => new Checkpoint(dom, c));
}

export async function lookupCheckpoint(dom: Domain, name: string): Promise<Checkpoint> {
  const r = await dom.conn.remote.domainCheckpointLookupByName({ dom: dom.ref, name, flags: 0 });
  return new Checkpoint(dom, r.checkpoint);
}

/** Start a backup job (push mode: qemu writes the disks' contents into the targets named in backupXml). */
export async function backupBegin(dom: Domain, backupXml: string, checkpointXml: string | null, flags = 0): Promise<void> {
  await dom.conn.remote.domainBackupBegin({ dom: dom.ref, backupXml, checkpointXml, flags });
}

/** The running backup job's XML (fails when there is none). */
export async function backupXml(dom: Domain, flags = 0): Promise<string> {
  return (await dom.conn.remote.domainBackupGetXmlDesc({ dom: dom.ref, flags })).xml;
}

/** Freeze the guest's filesystems through the guest agent (all when mountpoints is empty); returns how many. */
export async function fsFreeze(dom: Domain, mountpoints: string[] = []): Promise<number> {
  return (await dom.conn.remote.domainFsfreeze({ dom: dom.ref, mountpoints, flags: 0 })).filesystems;
}

export async function fsThaw(dom: Domain, mountpoints: string[] = []): Promise<number> {
  return (await dom.conn.remote.domainFsthaw({ dom: dom.ref, mountpoints, flags: 0 })).filesystems;
}
