/** The options, plan and result of `vmctl migrate` (shared by the pre-flight, the transport and the CLI). */
import type { GuestFacts } from './facts.js';

export type MigrateMode = 'p2p' | 'direct' | 'tunnelled';

export interface MigrateOptions {
  name: string;
  /** the destination as vmctl reaches it (also the source daemon's, in p2p/tunnelled mode) */
  to: string;
  mode?: MigrateMode;
  /** where QEMU sends the migration stream (tcp://HOST[:PORT]); default: libvirt's choice */
  migrateUri?: string;
  copyStorage?: 'all' | 'inc';
  maxDowntimeMs?: number;
  bandwidthMiB?: number;
  autoConverge?: boolean;
  postcopy?: boolean;
  /** switch to post-copy when pre-copy has not converged after this many seconds */
  postcopyAfterS?: number;
  compressed?: boolean;
  keepSource?: boolean;
  /** allow a KVM↔TCG move */
  forceAccel?: boolean;
  /** pass VIR_MIGRATE_UNSAFE (libvirt's cache-mode safety check) */
  unsafe?: boolean;
  dryRun?: boolean;
  /** job statistics poll interval (ms), default 500 */
  pollMs?: number;
}

export type CheckStatus = 'pass' | 'warn' | 'fail';

export interface PreflightCheck {
  id: string;
  status: CheckStatus;
  message: string;
  /** what to do about a warn/fail */
  fix?: string;
}

export interface DiskPlan {
  target: string;
  sourcePath: string;
  format: string;
  /** media: a read-only cdrom (the cloud-init seed) QEMU must open there: vmctl uploads it (libvirt copies only writable disks) */
  how: 'shared' | 'copy' | 'readonly' | 'media';
  capacityBytes?: number;
  /** copy: the volume vmctl creates on the destination */
  destPool?: string;
  destVolume?: string;
  destPath?: string;
  /** copy --inc: the backing image that must exist there */
  backingPath?: string;
  /** the source's volume is one vmctl made for this VM: removed from the source once the guest runs on the destination */
  owned?: boolean;
  /** the destination has no vmctl pool yet: vmctl makes it before the volumes */
  createPool?: boolean;
  /** media: the destination volume is the VM's own (a direct-kernel image's kernel/initrd uploaded under the VM's name), recorded in its vmctl metadata */
  recordAs?: string;
}

export interface SnapshotInfo {
  name: string;
  current: boolean;
  xml: string;
}

export interface MigratePlan {
  name: string;
  uuid: string;
  from: string;
  to: string;
  mode: MigrateMode;
  live: boolean;
  checks: PreflightCheck[];
  ok: boolean;
  disks: DiskPlan[];
  snapshots: string[];
  accel: { source: string; destination: string; guest: string };
  sshPort?: { from: number; to: number };
  flags: number;
  /** @internal */
  readonly internal: { facts: GuestFacts; snapshotXml: SnapshotInfo[]; opts: MigrateOptions };
}

export interface MigrateStats {
  timeMs: number;
  downtimeMs?: number;
  bytes?: number;
  memoryBytes?: number;
  diskBytes?: number;
  iterations?: number;
  postcopy: boolean;
  postcopySwitchAtMs?: number;
}

export interface MigrateResult extends MigrateStats {
  name: string;
  from: string;
  to: string;
  mode: MigrateMode;
  state: string;
  runsOn: string;
  snapshotsCarried: string[];
  disksCopied: string[];
  /** the source's copies (paths) of volumes vmctl made for the VM, removed after the move */
  sourceRemoved: string[];
  /** copied disks vmctl did not make: left on the source */
  sourceLeft: string[];
  sourceKept: boolean;
  checks: PreflightCheck[];
}
