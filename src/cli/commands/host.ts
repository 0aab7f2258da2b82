import type { Argv, CommandModule } from 'yargs';
import { makeContext, type GlobalArgs } from '../context.js';
const hostCore = () => import('../../core/host/check.js');
import { exitCodeFor } from '../exit.js';

interface CheckArgs extends GlobalArgs {
  refresh: boolean;
  probe: boolean;
}

function checkOptions<T>(y: Argv<T>): Argv<T & { refresh: boolean; probe: boolean }> {
  return y
    .option('refresh', {
      type: 'boolean',
      default: false,
      description: 'ignore cached capabilities and accelerator-probe results (cached per host for 7 days)',
    })
    .option('probe', {
      type: 'boolean',
      default: true,
      description: 'run the accelerator probe when no cached result exists (--no-probe: cached result or nothing)',
    });
}

async function checkHandler(argv: CheckArgs): Promise<void> {
  const ctx = makeContext(argv);
  const { runHostChecks, renderCheckLine, renderSummaryLine } = await hostCore();
  const report = await ctx.withConnection((conn) => runHostChecks(conn, { refresh: argv.refresh, probe: argv.probe, log: ctx.log }));
  if (ctx.json) ctx.out.json(report);
  else {
    for (const c of report.checks) ctx.out.line(renderCheckLine(c));
    ctx.out.line(renderSummaryLine(report));
  }
  // non-zero only when something makes VMs impossible
  if (!report.ok) process.exitCode = exitCodeFor('UNSUPPORTED');
}

const hostCheckCommand: CommandModule<GlobalArgs, CheckArgs> = {
  command: 'check',
  describe: 'check that this host can run VMs: CPU, KVM (probed), libvirt, QEMU, pool, network, tools',
  builder: (y) => checkOptions(y),
  handler: checkHandler,
};

export const hostCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'host',
  describe: 'host checks',
  builder: (y) => y.command(hostCheckCommand as never).demandCommand(1, 'name a host command; see vmctl host --help'),
  handler: () => undefined,
};

export const doctorCommand: CommandModule<GlobalArgs, CheckArgs> = {
  command: 'doctor',
  describe: 'same as vmctl host check',
  builder: (y) => checkOptions(y),
  handler: checkHandler,
};
