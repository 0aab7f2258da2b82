/**
 * The watcher of a running migration: polls the source's job statistics,
 * turns them into progress events (memory remaining, transfer rate, dirty
 * rate, iteration, post-copy), and decides when to switch to post-copy:
 * with --postcopy after the first full pass, with --postcopy-after S when
 * pre-copy has not converged after S seconds (it is still iterating and the
 * guest dirties memory at least half as fast as the link moves it, or what
 * remains no longer shrinks).
 */
import type { Domain, DomainJobStats } from '../../libvirt/connection.js';
import { startPostCopy } from '../../libvirt/connection.js';
import type { OpContext } from '../op/context.js';

export interface JobSample {
  atMs: number;
  elapsedMs: number;
  memoryTotal: number;
  memoryRemaining: number;
  memoryProcessed: number;
  diskTotal: number;
  diskRemaining: number;
  dataTotal: number;
  dataProcessed: number;
  dataRemaining: number;
  /** bytes/s */
  bps: number;
  /** bytes/s the guest dirties */
  dirtyBps: number;
  iteration: number;
  postcopyRequests: number;
}

const num = (v: unknown): number => (typeof v === 'bigint' ? Number(v) : typeof v === 'number' ? v : 0);

export function sampleFrom(s: DomainJobStats, atMs: number): JobSample {
  const p = s.params;
  const page = num(p.memory_page_size) || 4096;
  return {
    atMs,
    elapsedMs: num(p.time_elapsed),
    memoryTotal: num(p.memory_total),
    memoryRemaining: num(p.memory_remaining),
    memoryProcessed: num(p.memory_processed),
    diskTotal: num(p.disk_total),
    diskRemaining: num(p.disk_remaining),
    dataTotal: num(p.data_total),
    dataProcessed: num(p.data_processed),
    dataRemaining: num(p.data_remaining),
    bps: num(p.memory_bps),
    dirtyBps: num(p.memory_dirty_rate) * page,
    iteration: num(p.memory_iteration),
    postcopyRequests: num(p.memory_postcopy_requests),
  };
}

export interface PostcopyPolicy {
  /** switch after the first full pass */
  always?: boolean;
  /** switch when not converged after this many seconds */
  afterS?: number;
}

/** Why pre-copy should give way to post-copy now, or null. */
export function postcopyReason(policy: PostcopyPolicy, history: readonly JobSample[]): string | null {
  const last = history[history.length - 1];
  if (!last || last.iteration < 2) return null;
  if (policy.always) return 'first pre-copy pass done (--postcopy)';
  if (policy.afterS === undefined || last.elapsedMs < policy.afterS * 1000) return null;
  if (last.bps > 0 && last.dirtyBps >= last.bps * 0.5) {
    return `not converging after ${policy.afterS} s: the guest dirties ${Math.round(last.dirtyBps / 1048576)} MiB/s, the link moves ${Math.round(last.bps / 1048576)} MiB/s`;
  }
  const window = Math.max(2000, (policy.afterS * 1000) / 2);
  // the newest sample at least `window` older than the last one
  const earlier = [...history].reverse().find((h) => h.atMs <= last.atMs - window);
  if (earlier && last.memoryRemaining >= earlier.memoryRemaining * 0.5) {
    return `not converging after ${policy.afterS} s: ${Math.round(last.memoryRemaining / 1048576)} MiB still to send at iteration ${last.iteration}`;
  }
  return null;
}

export interface WatchResult {
  samples: number;
  last?: JobSample;
  postcopyAtMs?: number;
  postcopyReason?: string;
}

/**
 * Watch `dom`'s migration job until `done` settles. Progress goes to the
 * operation's event stream; post-copy is started per `policy`.
 */
export async function watchMigration(op: OpContext, dom: Domain, done: Promise<unknown>, o: {
    policy: PostcopyPolicy;
    pollMs?: number;
    t0: number;
    /** once the job is seen running */
    onFirstSample?: () => Promise<void>;
    /** no byte moved for stallMs (default 30 s): the caller aborts the job */
    onStall?: (why: string) => void;
    stallMs?: number;
  }): Promise<WatchResult> {
  let settled = false;
  void done.then(
    () => (settled = true),
    () => (settled = true),
  );
  const history: JobSample[] = [];
  const out: WatchResult = { samples: 0 };
  const pollMs = o.pollMs ?? 500;
  let stillSince: number | undefined;
  let stallReported = false;
  while (!settled) {
    // the poll timer is cleared as soon as the migration settles: a pending one would keep the
    // process alive for up to pollMs after the command is done
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([new Promise((r) => (timer = setTimeout(r, pollMs))), done.catch(() => undefined)]);
    clearTimeout(timer);
    if (settled) break;
    let stats: DomainJobStats;
    try {
      stats = await dom.jobStats();
    } catch {
      continue; // the job may just have ended
    }
    if (stats.type === 'none') continue;
    const s = sampleFrom(stats, Math.round(performance.now() - o.t0));
    history.push(s);
    if (history.length > 200) history.shift();
    out.samples++;
    if (out.samples === 1) await o.onFirstSample?.();
    const prev = out.last;
    out.last = s;
    if (prev && s.dataProcessed === prev.dataProcessed && s.dataRemaining > 0) {
      stillSince ??= prev.atMs;
      const stallMs = o.stallMs ?? 30_000;
      if (!stallReported && s.atMs - stillSince >= stallMs) {
        stallReported = true;
        o.onStall?.(`no data moved for ${Math.round(stallMs / 1000)} s (the destination or the network to it is gone)`);
      }
    } else stillSince = undefined;
    const post = out.postcopyAtMs !== undefined;
    op.progress({
      phase: 'migrate',
      done: s.dataProcessed,
      ...(s.dataTotal ? { total: s.dataProcessed + s.dataRemaining } : {}),
      bytesPerSecond: s.bps,
      etaSeconds: s.bps > 0 && !post ? Math.round(s.dataRemaining / Math.max(1, s.bps - s.dirtyBps)) : null,
      item: post ? 'post-copy' : `iteration ${s.iteration}`,
      message: `memory ${Math.round(s.memoryRemaining / 1048576)} MiB left of ${Math.round(s.memoryTotal / 1048576)}, dirty ${Math.round(s.dirtyBps / 1048576)} MiB/s${s.diskTotal ? `, disks ${Math.round(s.diskRemaining / 1048576)} MiB left` : ''}${post ? `, post-copy (${s.postcopyRequests} page requests)` : ''}`,
    });
    if (!post) {
      const why = postcopyReason(o.policy, history);
      if (why) {
        try {
          await startPostCopy(dom);
          out.postcopyAtMs = s.atMs;
          out.postcopyReason = why;
          op.phase('post-copy', why);
        } catch (e) {
          op.warn(`could not switch to post-copy: ${(e as Error).message}`);
          o.policy = {}; // do not retry every poll
        }
      }
    }
  }
  return out;
}
