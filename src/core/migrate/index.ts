/**
 * `vmctl migrate VM --to URI`: recovery of what an interrupted migration left
 * (recover.ts), the pre-flight (preflight.ts), then the move (apply.ts), whose
 * parts are the libvirt protocol per mode (transport.ts) and the job watcher
 * with its post-copy decision (worker.ts).
 */
import { VmctlError } from '../errors.js';
import type { OpContext } from '../op/context.js';
import { lookupVm } from '../vm/domain.js';
import { applyMigrate } from './apply.js';
import { planMigrate, preflightError } from './preflight.js';
import { recoverMigration, type Recovery } from './recover.js';
import type { MigrateOptions, MigratePlan, MigrateResult } from './types.js';

export type { MigrateOptions, MigratePlan, MigrateResult, PreflightCheck, MigrateMode } from './types.js';
export { recoverMigration, type Recovery } from './recover.js';

export interface MigrateOutcome {
  plan?: MigratePlan;
  /** --dry-run of a pre-flight that fails: the error the real command would give (its code sets the exit status) */
  planError?: VmctlError;
  result?: MigrateResult;
  recovered?: Recovery;
}

export async function migrateVm(op: OpContext, opts: MigrateOptions & { recoverOnly?: boolean }): Promise<MigrateOutcome> {
  const dst = await op.connection(opts.to).catch(() => undefined);
  const recovered = await op.step('recover', () => recoverMigration(op.conn, dst, opts.name));
  if (recovered) op.notice(recovered.message);
  if (opts.recoverOnly) {
    if (!recovered) throw new VmctlError('NOT_FOUND', `no interrupted migration of '${opts.name}' to set right`, { hint: 'nothing to do' });
    return { recovered };
  }
  if (recovered?.runsOn === 'destination' && !(await lookupVm(op.conn, opts.name))) return { recovered };
  const plan = await op.step('pre-flight', () => planMigrate(op, opts));
  for (const c of plan.checks) if (c.status === 'warn') op.warn(`${c.message}${c.fix ? ` (${c.fix})` : ''}`);
  if (opts.dryRun) return { plan, ...(plan.ok ? {} : { planError: preflightError(plan) }), ...(recovered ? { recovered } : {}) };
  if (!plan.ok) throw preflightError(plan);
  const result = await applyMigrate(op, plan);
  return { result, ...(recovered ? { recovered } : {}) };
}
