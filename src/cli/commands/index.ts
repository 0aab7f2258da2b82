import type { CommandModule } from 'yargs';
import { versionCommand } from './version.js';
import { listCommand } from './list.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [listCommand, versionCommand];
