/**
 * Domain jobs (migration, save, dump, snapshot, backup…) and block jobs
 * (pull, copy, commit, backup): typed progress and abort, so the code that
 * starts such jobs never needs the raw procedures. Used through Domain's
 * jobStats / abortJob / blockJobInfo / abortBlockJob.
 */
import type { TypedParam } from '../generated/remote.gen.js';
import { VirDomainGetJobStatsFlags } from '../generated/constants.gen.js';
import type { Domain } from './domain.js';

/** VIR_DOMAIN_JOB_* by value */
export const DOMAIN_JOB_TYPE_NAMES = ['none', 'bounded', 'unbounded', 'completed', 'failed', 'cancelled'] as const;
export type DomainJobTypeName = (typeof DOMAIN_JOB_TYPE_NAMES)[number] | 'unknown';

/** VIR_DOMAIN_BLOCK_JOB_TYPE_* by value */
export const BLOCK_JOB_TYPE_NAMES = ['unknown', 'pull', 'copy', 'commit', 'active-commit', 'backup'] as const;
export type BlockJobTypeName = (typeof BLOCK_JOB_TYPE_NAMES)[number];

export type TypedParamScalar = number | bigint | boolean | string;

/** libvirt typed parameters as a plain record (LLONG/ULLONG stay bigint, BOOLEAN becomes boolean). */
export function typedParamsToRecord(params: readonly TypedParam[]): Record<string, TypedParamScalar> {
  const out: Record<string, TypedParamScalar> = {};
  for (const { field, value: v } of params) {
    switch (v.type) {
      case 1: out[field] = v.i; break;
      case 2: out[field] = v.ui; break;
      case 3: out[field] = v.l; break;
      case 4: out[field] = v.ul; break;
      case 5: out[field] = v.d; break;
      case 6: out[field] = v.b !== 0; break;
      case 7: out[field] = v.s; break;
    }
  }
  return out;
}

export interface DomainJobStats {
  readonly type: DomainJobTypeName;
  readonly typeCode: number;
  /**
   * Every field the daemon sent, by its VIR_DOMAIN_JOB_* name: e.g.
   * `operation`, `time_elapsed`, `data_total`, `data_processed`,
   * `data_remaining`, `memory_total`, `disk_total`… (absent ones are not
   * known for this job).
   */
  readonly params: Readonly<Record<string, TypedParamScalar>>;
}

export interface BlockJobInfo {
  readonly type: BlockJobTypeName;
  readonly typeCode: number;
  /** bandwidth limit (MiB/s unless the job was started with the bytes flag) */
  readonly bandwidth: bigint;
  /** progress: cur of end (units are the job's own) */
  readonly cur: bigint;
  readonly end: bigint;
}

/** The domain's current job (or, with `completed`, the last completed one). */
export async function domainJobStats(dom: Domain, opts: { completed?: boolean; keepCompleted?: boolean } = {}): Promise<DomainJobStats> {
  const F = VirDomainGetJobStatsFlags;
  let flags = 0;
  if (opts.completed) flags |= F.VIR_DOMAIN_JOB_STATS_COMPLETED;
  if (opts.keepCompleted) flags |= F.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED;
  const r = await dom.conn.remote.domainGetJobStats({ dom: dom.ref, flags });
  return { type: DOMAIN_JOB_TYPE_NAMES[r.type] ?? 'unknown', typeCode: r.type, params: typedParamsToRecord(r.params) };
}

/** Abort the domain's current job (flags: VIR_DOMAIN_ABORT_JOB_*; 0 uses the old call every daemon has). */
export async function domainAbortJob(dom: Domain, flags = 0): Promise<void> {
  if (flags === 0) await dom.conn.remote.domainAbortJob({ dom: dom.ref });
  else await dom.conn.remote.domainAbortJobFlags({ dom: dom.ref, flags });
}

/** The block job on disk `path` (target name like 'vda' or the source path), null when there is none. */
export async function blockJobInfo(dom: Domain, path: string, flags = 0): Promise<BlockJobInfo | null> {
  const r = await dom.conn.remote.domainGetBlockJobInfo({ dom: dom.ref, path, flags });
  if (r.found === 0) return null;
  return { type: BLOCK_JOB_TYPE_NAMES[r.type] ?? 'unknown', typeCode: r.type, bandwidth: r.bandwidth, cur: r.cur, end: r.end };
}

/** Abort (or with VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT, pivot) the block job on disk `path`. */
export async function abortBlockJob(dom: Domain, path: string, flags = 0): Promise<void> {
  await dom.conn.remote.domainBlockJobAbort({ dom: dom.ref, path, flags });
}
