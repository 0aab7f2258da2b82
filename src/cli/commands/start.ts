/** `vmctl start`. */
import { makeContext } from '../context.js';
import { type Cmd, nameArg, vmCore, showPhase } from '../vm-args.js';

export const startCommand: Cmd<{ name: string; wait: 'ssh' | 'ip' | 'none'; timeout: number }> = {
  command: 'start <name>',
  describe: 'start a stopped VM (--wait ssh|ip to wait until it is ready)',
  builder: (y) =>
    nameArg(y)
      .option('wait', { choices: ['ssh', 'ip', 'none'] as const, default: 'none' as const, describe: 'what to wait for' })
      .option('timeout', { type: 'number', default: 900, describe: 'seconds to wait for readiness' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { startVm } = await vmCore();
    const r = await ctx.withConnection((conn) =>
      startVm(conn, argv.name, { wait: argv.wait, timeoutMs: argv.timeout * 1000 }, {
        log: ctx.log,
        onPhase: (e) => showPhase(ctx, e),
      }),
    );
    if (ctx.json) return ctx.out.json({ name: argv.name, result: 'started', ...r });
    ctx.out.line(`${argv.name}: started`);
  },
};
