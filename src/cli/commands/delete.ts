/** `vmctl delete`. */
import { withOp } from '../op.js';
import { type Cmd, nameArg, vmCore } from '../vm-args.js';

export const deleteCommand: Cmd<{ name: string }> = {
  command: 'delete <name>',
  aliases: ['rm'],
  describe: 'remove a VM vmctl made (also one an interrupted command left incomplete): power off, delete its volumes, undefine',
  builder: (y) => nameArg(y) as never,
  handler: async (argv) => {
    const { deleteVm } = await vmCore();
    await withOp(argv, 'delete', async ({ op, ctx }) => {
      const r = await deleteVm(op, argv.name);
      if (ctx.json) return ctx.out.json({ name: argv.name, result: 'deleted', ...r });
      const what = r.wasIncomplete ? ` (incomplete: vmctl ${r.wasIncomplete.op} had stopped at '${r.wasIncomplete.step}')` : '';
      ctx.out.line(`${argv.name}: deleted${what}${r.removedVolumes.length ? ` (volumes removed: ${r.removedVolumes.join(', ')})` : ''}`);
    });
  },
};
