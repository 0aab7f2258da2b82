/** What the VM command files share: the command type, the name positional, the lazily loaded core, phase lines. */
import type { Argv, CommandModule } from 'yargs';
import type { Context, GlobalArgs } from './context.js';
import type { PhaseEvent } from '../core/vm/lifecycle.js';

export type Cmd<A> = CommandModule<GlobalArgs, GlobalArgs & A>;

export const nameArg = <T>(y: Argv<T>) => y.positional('name', { type: 'string', demandOption: true, describe: 'VM name' });

/** the VM core (templates/ajv, images, cloud-init, ssh2) loads only when a VM command runs */
export const vmCore = () => import('../core/vm/lifecycle.js');

/** one readiness phase with its time since the command started, on stderr */
export function showPhase(ctx: Context, e: PhaseEvent): void {
  if (!ctx.json) ctx.err(`  ${e.phase.padEnd(10)} ${(e.atMs / 1000).toFixed(1).padStart(6)} s${e.detail ? `  ${e.detail}` : ''}`);
}
