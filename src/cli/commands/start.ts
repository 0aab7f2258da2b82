/** `vmctl start`. */
import { withOp } from '../op.js';
import { type Cmd, nameArg, vmCore } from '../vm-args.js';

export const startCommand: Cmd<{ name: string; wait: 'ssh' | 'ip' | 'none'; timeout: number }> = {
  command: 'start <name>',
  describe: 'start a stopped VM (--wait ssh|ip to wait until it is ready)',
  builder: (y) =>
    nameArg(y)
      .option('wait', { choices: ['ssh', 'ip', 'none'] as const, default: 'none' as const, describe: 'what to wait for' })
      .option('timeout', { type: 'number', default: 900, describe: 'seconds to wait for readiness' }) as never,
  handler: async (argv) => {
    const { startVm } = await vmCore();
    await withOp(argv, 'start', async ({ op, ctx, quiet }) => {
      const r = await startVm(op, argv.name, { wait: argv.wait, timeoutMs: argv.timeout * 1000 });
      quiet();
      if (ctx.json) return ctx.out.json({ name: argv.name, result: 'started', ...r });
      ctx.out.line(`${argv.name}: started`);
    });
  },
};
