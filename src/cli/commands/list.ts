import type { CommandModule } from 'yargs';
import { makeContext, type GlobalArgs } from '../context.js';
import { listVms } from '../../core/vm/list.js';
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
    const vms = await ctx.withConnection((conn) => listVms(conn, { all: argv.all }));
    if (ctx.json) return ctx.out.json(vms);
    ctx.out.line(
      formatTable(
        ['ID', 'NAME', 'STATE', 'VCPUS', 'MEMORY'],
        vms.map((v) => [v.id === null ? '-' : String(v.id), v.name, v.state, String(v.vcpus), formatBytes(v.memoryKiB * 1024)]),
      ),
    );
  },
};
