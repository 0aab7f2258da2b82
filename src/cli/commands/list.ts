import type { CommandModule } from 'yargs';
import { makeContext, type GlobalArgs } from '../context.js';

import { formatTable, formatBytes } from '../render.js';

interface ListArgs extends GlobalArgs {
  all: boolean;
}

export const listCommand: CommandModule<GlobalArgs, ListArgs> = {
  command: 'list',
  aliases: ['ls'],
  describe: 'list virtual machines (running ones unless --all)',
  builder: (y) => y.option('all', { alias: 'a', type: 'boolean', default: false, description: 'include stopped VMs' }),
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { listVms } = await import('../../core/vm/list.js');
    const vms = await ctx.withConnection((conn) => listVms(conn, { all: argv.all }));
    if (ctx.json) return ctx.out.json(vms);
    const state = (v: (typeof vms)[number]) =>
      v.incomplete ? `incomplete (${v.incomplete.op}: ${v.incomplete.step}${v.incomplete.running === 'yes' ? ', still running' : v.incomplete.running === 'no' ? ', interrupted' : ''})` : v.state;
    ctx.out.line(
      formatTable(
        ['ID', 'NAME', 'STATE', 'VCPUS', 'MEMORY'],
        vms.map((v) => [v.id === null ? '-' : String(v.id), v.name, state(v), String(v.vcpus), formatBytes(v.memoryKiB * 1024)]),
      ),
    );
    const stranded = vms.filter((v) => v.incomplete && v.incomplete.running !== 'yes');
    const made = stranded.filter((v) => !v.incomplete!.op.startsWith('snapshot'));
    const snaps = stranded.filter((v) => v.incomplete!.op.startsWith('snapshot'));
    if (made.length > 0) ctx.err(`vmctl: ${made.map((v) => v.name).join(', ')}: left incomplete by an interrupted command; vmctl delete NAME removes what it made`);
    if (snaps.length > 0) ctx.err(`vmctl: ${snaps.map((v) => v.name).join(', ')}: a snapshot command was interrupted; the next vmctl snapshot or start command on it cleans up`);
  },
};
