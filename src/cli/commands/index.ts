import type { CommandModule } from 'yargs';
import { versionCommand } from './version.js';
import { listCommand } from './list.js';
import { vmCommands } from './vm.js';
import { hostCommand, doctorCommand } from './host.js';
import { imageCommand } from './image.js';
import { templateCommand } from './template.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [listCommand, versionCommand, hostCommand, doctorCommand, imageCommand, templateCommand, ...vmCommands];
