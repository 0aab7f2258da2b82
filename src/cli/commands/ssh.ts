/** `vmctl ssh`: a shell or a command in the guest, host key verified strictly. */
import { makeContext } from '../context.js';
import { type Cmd, nameArg, vmCore } from '../vm-args.js';
import type { GuestTarget } from '../../core/guest/ssh.js';

const ssh = () => import('../../core/guest/ssh.js');

/** the words after the VM name, before and after `--` */
export function commandWords(argv: { command?: string[] }): string[] {
  return [...(argv.command ?? []), ...(((argv as Record<string, unknown>)['--'] as string[] | undefined) ?? [])];
}

/** A shell (no words) or the command, on this terminal; resolves to the exit code. */
export async function runInGuest(target: GuestTarget, words: readonly string[]): Promise<number> {
  const { connectRunningGuest, guestExec, guestShell } = await ssh();
  const guest = await connectRunningGuest(target);
  try {
    if (words.length === 0) return await guestShell(guest, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
    return await guestExec(guest, words.join(' '), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
  } finally {
    guest.close();
  }
}

export const sshCommand: Cmd<{ name: string; command?: string[] }> = {
  command: 'ssh <name> [command..]',
  describe: 'open a shell in the VM, or run a command (after --): exit code propagated; host key verified strictly',
  builder: (y) => nameArg(y).positional('command', { type: 'string', array: true }).parserConfiguration({ 'populate--': true }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { vmSshTarget } = await vmCore();
    const code = await ctx.withConnection(async (conn) => runInGuest(await vmSshTarget(conn, argv.name), commandWords(argv)));
    process.exitCode = code;
  },
};
