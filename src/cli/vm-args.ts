/** What the VM command files share: the command type, the name positional, the lazily loaded core, phase lines. */
import type { Argv, CommandModule } from 'yargs';
import type { GlobalArgs } from './context.js';

export type Cmd<A> = CommandModule<GlobalArgs, GlobalArgs & A>;

export const nameArg = <T>(y: Argv<T>) => y.positional('name', { type: 'string', demandOption: true, describe: 'VM name' });

/** the VM core (templates/ajv, images, cloud-init, ssh2) loads only when a VM command runs */
export const vmCore = () => import('../core/vm/lifecycle.js');
