/** vmctl entry: parse → call core → render. Never throws; returns the exit status. */
import yargs, { type Argv } from 'yargs';
import { VmctlError, toVmctlError } from '../core/errors.js';
import { LOG_LEVELS } from '../core/log.js';
import { exitCodeFor, EXIT_OK } from './exit.js';
import { toJson, type GlobalArgs } from './context.js';
import { commands } from './commands/index.js';
import { PROGRESS_MODES } from './events.js';
import { packageVersion } from '../core/package-root.js';

/** When stdout is not a terminal and $COLUMNS says nothing usable. */
export const DEFAULT_HELP_WIDTH = 100;
const MIN_HELP_WIDTH = 40;

/**
 * Width --help wraps at: the terminal's when stdout is one, else $COLUMNS
 * (shells set it, e.g. `COLUMNS=80 vmctl --help | less`), else 100; never
 * below 40 columns (narrower cannot hold a flag and its description).
 */
export function helpWidth(out: { isTTY?: boolean; columns?: number } = process.stdout, env: NodeJS.ProcessEnv = process.env): number {
  const fromEnv = Number(env.COLUMNS);
  const width = out.isTTY && out.columns ? out.columns : Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : DEFAULT_HELP_WIDTH;
  return Math.max(MIN_HELP_WIDTH, width);
}

export function buildParser(args: string[]): Argv<GlobalArgs> {
  let parser = yargs(args)
    .scriptName('vmctl')
    .usage('$0 <command> [options]\n\nKVM/QEMU virtual machines through libvirt.')
    .option('connect', {
      alias: 'c',
      type: 'string',
      description: 'libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///system)',
    })
    .option('json', { type: 'boolean', default: false, description: 'print results as JSON' })
    .option('log-level', { choices: LOG_LEVELS, default: 'warn', description: 'log verbosity (logs go to stderr)' })
    .option('log-format', { choices: ['text', 'json'] as const, default: 'text', description: 'log line format' })
    .option('progress', {
      choices: PROGRESS_MODES,
      default: 'auto' as const,
      description: 'progress on stderr: auto (tty on a terminal, else plain), tty, plain, json (NDJSON events), none',
    })
    .option('accept-host-key', {
      type: 'boolean',
      default: false,
      description: 'ssh: accept and record an UNKNOWN host key (a changed key is always refused)',
    })
    .strict()
    .demandCommand(1, 'name a command; see vmctl --help')
    .recommendCommands()
    // `vmctl completion` prints the bash (zsh when $SHELL is zsh) script; the script calls `vmctl --get-yargs-completions …`
    .completion('completion', 'print a bash/zsh completion script (add `source <(vmctl completion)` to ~/.bashrc or ~/.zshrc)')
    .help()
    .alias('help', 'h')
    // handled in main() before parsing (no connection); declared here for --help and strict mode
    .version('version', "print vmctl's version and exit (vmctl version: libvirt's and the hypervisor's too)", packageVersion())
    .alias('version', 'V')
    .wrap(helpWidth())
    .exitProcess(false)
    .fail((msg, err) => {
      if (err) throw err;
      throw new VmctlError('USAGE', msg);
    }) as unknown as Argv<GlobalArgs>;
  for (const cmd of commands) parser = parser.command(cmd as never);
  return parser;
}

/** `vmctl list | head -1`: a reader that went away is not an error (like any Unix tool, stop quietly). */
function exitQuietlyOnEpipe(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

export async function main(args: string[]): Promise<number> {
  exitQuietlyOnEpipe();
  const wantsJson = args.includes('--json');
  // `vmctl --version` / `-V` anywhere before `--`: the client's version, no connection (like virsh --version)
  const beforeDashes = args.includes('--') ? args.slice(0, args.indexOf('--')) : args;
  if (beforeDashes.some((a) => a === '--version' || a === '-V')) {
    process.stdout.write(wantsJson ? toJson({ vmctl: packageVersion() }) + '\n' : `vmctl ${packageVersion()}\n`);
    return EXIT_OK;
  }
  try {
    await buildParser(args).parseAsync();
    return process.exitCode === undefined ? EXIT_OK : Number(process.exitCode);
  } catch (raw) {
    const err = toVmctlError(raw);
    if (wantsJson) {
      process.stdout.write(toJson({ error: { code: err.code, message: err.message, hint: err.hint, ...err.details } }) + '\n');
    }
    process.stderr.write(`vmctl: ${err.oneLine()}\n`);
    if (err.code === 'INTERNAL' && process.env.VMCTL_DEBUG) process.stderr.write(`${(raw as Error)?.stack ?? ''}\n`);
    return exitCodeFor(err.code);
  }
}
