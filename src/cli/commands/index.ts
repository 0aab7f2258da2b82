import type { CommandModule } from 'yargs';
import { versionCommand } from './version.js';
import { listCommand } from './list.js';
import { hostCommand, doctorCommand } from './host.js';
import { imageCommand } from './image.js';
import { createCommand } from './create.js';
import { startCommand } from './start.js';
import { stopCommand } from './stop.js';
import { powerCommands } from './power.js';
import { deleteCommand } from './delete.js';
import { infoCommand, ipCommand } from './info.js';
import { sshCommand } from './ssh.js';
import { consoleCommand } from './console.js';
import { eventsCommand } from './events.js';
import { templateCommand } from './template.js';
import { snapshotCommand } from './snapshot.js';
import { backupCommand, backupGuardCommand } from './backup.js';
import { restoreCommand } from './restore.js';
import { migrateCommand } from './migrate.js';
import { labCommand } from './lab.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [
  listCommand,
  versionCommand,
  hostCommand,
  doctorCommand,
  imageCommand,
  templateCommand,
  createCommand,
  startCommand,
  stopCommand,
  ...powerCommands,
  deleteCommand,
  infoCommand,
  ipCommand,
  sshCommand,
  consoleCommand,
  eventsCommand,
  snapshotCommand,
  backupCommand,
  backupGuardCommand,
  restoreCommand,
  migrateCommand,
  labCommand,
];
