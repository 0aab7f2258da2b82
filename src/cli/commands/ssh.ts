/** `vmctl ssh`: a shell or a command in the guest, host key verified strictly. */
import { makeContext } from '../context.js';
import { type Cmd, nameArg, vmCore } from '../vm-args.js';

const ssh = () => import('../../core/guest/ssh.js');

export const sshCommand: Cmd<{ name: string; command?: string[] }> = {
  command: 'ssh <name> [command..]',
  describe: 'open a shell in the VM, or run a command (after --): exit code propagated; host key verified strictly',
  builder: (y) => nameArg(y).positional('command', { type: 'string', array: true }).parserConfiguration({ 'populate--': true }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { vmSshTarget } = await vmCore();
    const { connectGuest, guestExec, guestShell } = await ssh();
    const rest = [...(argv.command ?? []), ...(((argv as Record<string, unknown>)['--'] as string[] | undefined) ?? [])];
    const code = await ctx.withConnection(async (conn) => {
      const target = await vmSshTarget(conn, argv.name);
      const guest = await connectGuest({ ...target, timeoutMs: 30_000 });
      try {
        if (rest.length === 0) return await guestShell(guest, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
        return await guestExec(guest, rest.join(' '), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
      } finally {
        guest.close();
      }
    });
    process.exitCode = code;
  },
};
