/** `vmctl delete`. */
import { makeContext } from '../context.js';
import { type Cmd, nameArg, vmCore } from '../vm-args.js';

export const deleteCommand: Cmd<{ name: string }> = {
  command: 'delete <name>',
  aliases: ['rm'],
  describe: 'remove a VM: power off, undefine, delete the volumes vmctl created for it',
  builder: (y) => nameArg(y) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { deleteVm } = await vmCore();
    const r = await ctx.withConnection((conn) => deleteVm(conn, argv.name, ctx.log));
    if (ctx.json) return ctx.out.json({ name: argv.name, result: 'deleted', ...r });
    ctx.out.line(`${argv.name}: deleted${r.removedVolumes.length ? ` (volumes removed: ${r.removedVolumes.join(', ')})` : ''}`);
  },
};
