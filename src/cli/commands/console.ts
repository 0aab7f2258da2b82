/** `vmctl console`: the serial console (the pump is src/core/guest/console.ts). */
import { makeContext } from '../context.js';

import { type Cmd, nameArg, vmCore } from '../vm-args.js';

export const consoleCommand: Cmd<{ name: string }> = {
  command: 'console <name>',
  describe: "attach to the VM's serial console (Ctrl-] leaves)",
  builder: (y) => nameArg(y) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { findVm } = await vmCore();
    await ctx.withConnection(async (conn) => {
      const dom = await findVm(conn, argv.name);
      ctx.err(`Connected to ${argv.name}'s serial console. Escape character is ^]`);
      try {
        await (await import('../../core/guest/console.js')).attachConsole(dom, { input: process.stdin, output: process.stdout });
      } finally {
        process.stdin.destroy(); // pause() alone keeps a piped stdin (and so the process) alive
      }
    });
  },
};
