/** `vmctl console`: the serial console. */
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
      const stream = await dom.openConsole();
      ctx.err(`Connected to ${argv.name}'s serial console. Escape character is ^]`);
      const stdin = process.stdin;
      const raw = stdin.isTTY;
      if (raw) stdin.setRawMode(true);
      await new Promise<void>((resolve) => {
        const finish = () => {
          stdin.off('data', onInput);
          if (raw) stdin.setRawMode(false);
          stdin.destroy(); // pause() alone keeps a piped stdin (and so the process) alive
          stream.abort();
          resolve();
        };
        const onInput = (b: Buffer) => {
          const esc = b.indexOf(0x1d);
          if (esc >= 0) {
            if (esc > 0) stream.write(b.subarray(0, esc));
            return finish();
          }
          stream.write(b);
        };
        stdin.on('data', onInput);
        stdin.once('end', finish);
        stream.on('data', (d: Buffer) => process.stdout.write(d));
        stream.once('end', finish);
        stream.once('error', finish);
      });
    });
  },
};
