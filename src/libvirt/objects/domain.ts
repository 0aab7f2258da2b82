/** A domain (VM): state, lifecycle, XML, addresses, metadata, console, snapshots and jobs. */
import type { CallOptions, RpcStream } from '../rpc/caller.js';
import type { DomainGetInfoRet, DomainInterface, NonnullDomain, RemoteProcedures } from '../generated/remote.gen.js';
import type { Connection } from '../connection.js';
import { Snapshot } from './snapshot.js';
import { abortBlockJob, blockJobInfo, domainAbortJob, domainJobStats, type BlockJobInfo, type DomainJobStats } from './jobs.js';
import { uuidToString } from './uuid.js';
import { backupBegin, backupXml, Checkpoint, createCheckpoint, fsFreeze, fsThaw, listCheckpoints, lookupCheckpoint } from './checkpoint.js';

export const DOMAIN_STATE_NAMES = ['nostate', 'running', 'blocked', 'paused', 'shutdown', 'shutoff', 'crashed', 'pmsuspended'] as const;
export type DomainStateName = (typeof DOMAIN_STATE_NAMES)[number] | 'unknown';

export function domainStateName(state: number): DomainStateName {
  return DOMAIN_STATE_NAMES[state] ?? 'unknown';
}

export class Domain {
  readonly name: string;
  readonly uuid: Buffer;
  readonly id: number;

  constructor(
    readonly conn: Connection,
    readonly ref: NonnullDomain,
  ) {
    this.name = ref.name;
    this.uuid = ref.uuid;
    this.id = ref.id;
  }

  get uuidString(): string {
    return uuidToString(this.uuid);
  }

  private get r(): RemoteProcedures {
    return this.conn.remote;
  }

  info(): Promise<DomainGetInfoRet> {
    return this.r.domainGetInfo({ dom: this.ref });
  }

  async state(): Promise<{ state: DomainStateName; reason: number }> {
    const s = await this.r.domainGetState({ dom: this.ref, flags: 0 });
    return { state: domainStateName(s.state), reason: s.reason };
  }

  async isActive(): Promise<boolean> {
    return (await this.r.domainIsActive({ dom: this.ref })).active === 1;
  }

  async isPersistent(): Promise<boolean> {
    return (await this.r.domainIsPersistent({ dom: this.ref })).persistent === 1;
  }

  async xml(flags = 0): Promise<string> {
    return (await this.r.domainGetXmlDesc({ dom: this.ref, flags })).xml;
  }

  /** Start a defined domain; returns the running domain (with its id). */
  async start(flags = 0): Promise<Domain> {
    return new Domain(this.conn, (await this.r.domainCreateWithFlags({ dom: this.ref, flags })).dom);
  }

  async shutdown(flags = 0): Promise<void> {
    await this.r.domainShutdownFlags({ dom: this.ref, flags });
  }

  async reboot(flags = 0): Promise<void> {
    await this.r.domainReboot({ dom: this.ref, flags });
  }

  async destroy(flags = 0): Promise<void> {
    await this.r.domainDestroyFlags({ dom: this.ref, flags });
  }

  async setAutostart(on: boolean): Promise<void> {
    await this.r.domainSetAutostart({ dom: this.ref, autostart: on ? 1 : 0 });
  }

  async autostart(): Promise<boolean> {
    return (await this.r.domainGetAutostart({ dom: this.ref })).autostart === 1;
  }

  async suspend(): Promise<void> {
    await this.r.domainSuspend({ dom: this.ref });
  }

  async resume(): Promise<void> {
    await this.r.domainResume({ dom: this.ref });
  }

  async undefine(flags = 0): Promise<void> {
    await this.r.domainUndefineFlags({ dom: this.ref, flags });
  }

  /** The guest's interfaces and addresses from one source (VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_*). */
  /** `opts`: stop waiting on abort or after timeoutMs (an agent that does not answer holds the call) */
  async interfaceAddresses(source: number, opts?: CallOptions): Promise<DomainInterface[]> {
    return (await this.r.domainInterfaceAddresses({ dom: this.ref, source, flags: 0 }, opts)).ifaces;
  }

  /** Set (or with null remove) one custom metadata element (VIR_DOMAIN_METADATA_ELEMENT) in namespace `uri`. */
  async setMetadataElement(uri: string, key: string, xml: string | null, flags: number): Promise<void> {
    await this.r.domainSetMetadata({ dom: this.ref, type: 2, metadata: xml, key: xml === null ? null : key, uri, flags });
  }

  /** Serial console (or another character device) as a bidirectional stream. */
  async openConsole(devName: string | null = null, flags = 0): Promise<RpcStream> {
    const { stream } = await this.r.domainOpenConsole({ dom: this.ref, devName, flags });
    return stream;
  }

  // ---- snapshots ------------------------------------------------------------

  async createSnapshot(xml: string, flags = 0): Promise<Snapshot> {
    const r = await this.r.domainSnapshotCreateXml({ dom: this.ref, xmlDesc: xml, flags });
    return new Snapshot(this, r.snap);
  }

  async listSnapshots(flags = 0): Promise<Snapshot[]> {
    const r = await this.r.domainListAllSnapshots({ dom: this.ref, needResults: 1, flags });
    return r.snapshots.map((s) => new Snapshot(this, s));
  }

  /** The current snapshot, or null when there is none. */
  async currentSnapshot(): Promise<Snapshot | null> {
    if ((await this.r.domainHasCurrentSnapshot({ dom: this.ref, flags: 0 })).result !== 1) return null;
    return new Snapshot(this, (await this.r.domainSnapshotCurrent({ dom: this.ref, flags: 0 })).snap);
  }

  /** Merge the layers of `disk` from `top` (null: the active layer) down into `base` (a block job). */
  async blockCommit(disk: string, base: string | null, top: string | null, flags = 0): Promise<void> {
    await this.r.domainBlockCommit({ dom: this.ref, disk, base, top, bandwidth: 0n, flags });
  }

  /** The current snapshot's name, or null when there is none. */
  async currentSnapshotName(): Promise<string | null> {
    return (await this.currentSnapshot())?.name ?? null;
  }

  async lookupSnapshot(name: string): Promise<Snapshot> {
    const r = await this.r.domainSnapshotLookupByName({ dom: this.ref, name, flags: 0 });
    return new Snapshot(this, r.snap);
  }

  // ---- jobs (objects/jobs.ts) -------------------------------------------------

  /** The current domain job (type 'none' when there is none), or with `completed` the last finished one. */
  jobStats(opts: { completed?: boolean; keepCompleted?: boolean } = {}): Promise<DomainJobStats> {
    return domainJobStats(this, opts);
  }

  /** Abort the current domain job (e.g. a migration or a save). */
  abortJob(flags = 0): Promise<void> {
    return domainAbortJob(this, flags);
  }

  /** The block job on one disk (target like 'vda'), null when there is none. */
  blockJobInfo(disk: string, flags = 0): Promise<BlockJobInfo | null> {
    return blockJobInfo(this, disk, flags);
  }

  /** Abort (VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT: pivot to the copy) the block job on one disk. */
  abortBlockJob(disk: string, flags = 0): Promise<void> {
    return abortBlockJob(this, disk, flags);
  }

  /** Sizes of one disk (target like 'vda' or its source path): capacity (what the guest sees), allocation, physical. */
  async blockInfo(disk: string): Promise<{ capacity: bigint; allocation: bigint; physical: bigint }> {
    return this.r.domainGetBlockInfo({ dom: this.ref, path: disk, flags: 0 });
  }

  // ---- checkpoints and backups (objects/checkpoint.ts) -------------------------

  createCheckpoint(xml: string, flags = 0): Promise<Checkpoint> {
    return createCheckpoint(this, xml, flags);
  }

  listCheckpoints(flags = 0): Promise<Checkpoint[]> {
    return listCheckpoints(this, flags);
  }

  lookupCheckpoint(name: string): Promise<Checkpoint> {
    return lookupCheckpoint(this, name);
  }

  /** virDomainBackupBegin: push mode writes into the targets of backupXml; checkpointXml creates a checkpoint with it. */
  backupBegin(backupXmlDesc: string, checkpointXml: string | null, flags = 0): Promise<void> {
    return backupBegin(this, backupXmlDesc, checkpointXml, flags);
  }

  backupXml(flags = 0): Promise<string> {
    return backupXml(this, flags);
  }

  /** Guest agent: freeze all (or the given) filesystems; returns how many were frozen. */
  fsFreeze(mountpoints: string[] = []): Promise<number> {
    return fsFreeze(this, mountpoints);
  }

  fsThaw(mountpoints: string[] = []): Promise<number> {
    return fsThaw(this, mountpoints);
  }
}
