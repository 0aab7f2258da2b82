/** `vmctl stop`. */
import { withOp } from '../op.js';
import { type Cmd, nameArg, vmCore } from '../vm-args.js';

export const stopCommand: Cmd<{ name: string; force: boolean; timeout: number }> = {
  command: 'stop <name>',
  describe: 'shut a VM down (ACPI), waiting for it; --force powers it off after --timeout',
  builder: (y) =>
    nameArg(y)
      .option('force', { type: 'boolean', default: false, describe: 'power off if it has not shut down in time' })
      .option('timeout', { type: 'number', default: 120, describe: 'seconds to wait for the guest to shut down' }) as never,
  handler: async (argv) => {
    const { stopVm } = await vmCore();
    await withOp(argv, 'stop', async ({ op, ctx, quiet }) => {
      const r = await stopVm(op, argv.name, { force: argv.force, timeoutMs: argv.timeout * 1000 });
      quiet();
      if (ctx.json) return ctx.out.json({ name: argv.name, result: 'stopped', forced: r.forced });
      ctx.out.line(`${argv.name}: stopped${r.forced ? ' (forced off after the timeout)' : ''}`);
    });
  },
};
