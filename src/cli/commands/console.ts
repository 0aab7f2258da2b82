/** `vmctl console`: the serial console (the pump is src/core/guest/console.ts). */
import { makeContext } from '../context.js';

import { type Cmd, nameArg, vmCore } from '../vm-args.js';

export const consoleCommand: Cmd<{ name: string; force?: boolean }> = {
  command: 'console <name>',
  describe: "attach to the VM's serial console (Ctrl-] leaves)",
  builder: (y) =>
    nameArg(y).option('force', { type: 'boolean', describe: 'take the console over from another session (one at a time, as in virsh)' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { findVm } = await vmCore();
    await ctx.withConnection(async (conn) => {
      const dom = await findVm(conn, argv.name);
      try {
        await (await import('../../core/guest/console.js')).attachConsole(dom, { input: process.stdin, output: process.stdout }, {
          force: argv.force === true,
          onOpen: () => ctx.err(`Connected to ${argv.name}'s serial console. Escape character is ^]`),
        });
      } finally {
        process.stdin.destroy(); // pause() alone keeps a piped stdin (and so the process) alive
      }
    });
  },
};
