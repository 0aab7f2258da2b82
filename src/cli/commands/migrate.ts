/** `vmctl migrate VM --to URI`: live migration with pre-flight, progress and a report. */
import type { Context } from '../context.js';
import { formatBytes } from '../render.js';
import { withOp } from '../op.js';
import { exitCodeFor } from '../exit.js';
import { type Cmd, nameArg } from '../vm-args.js';
import type { MigratePlan, MigrateResult } from '../../core/migrate/index.js';

interface MigrateArgs {
  name: string;
  to: string;
  direct?: boolean;
  tunnelled?: boolean;
  'migrate-uri'?: string;
  'copy-storage'?: 'all' | 'inc';
  'max-downtime'?: number;
  bandwidth?: number;
  'auto-converge': boolean;
  postcopy: boolean;
  'postcopy-after'?: number;
  compressed: boolean;
  'keep-source': boolean;
  'force-accel': boolean;
  unsafe: boolean;
  'dry-run': boolean;
  recover: boolean;
}

export const migrateCommand: Cmd<MigrateArgs> = {
  command: 'migrate <name>',
  describe: 'move a running VM to another host, live (pre-flight checks, progress, post-copy, snapshots carried)',
  builder: (y) =>
    nameArg(y)
      .option('to', { type: 'string', demandOption: true, describe: 'destination libvirt URI (as vmctl reaches it; in peer-to-peer mode also the source host)' })
      .option('direct', { type: 'boolean', describe: 'vmctl drives both hosts (client-driven protocol) instead of the source talking to the destination' })
      .option('tunnelled', { type: 'boolean', describe: 'send the migration stream through the libvirt connection (peer-to-peer)' })
      .option('migrate-uri', { type: 'string', describe: 'where the migration stream goes, e.g. tcp://10.0.0.2 (default: libvirt picks)' })
      .option('copy-storage', { choices: ['all', 'inc'] as const, describe: 'copy disks that are not on shared storage (inc: only the overlay, its base must be there)' })
      .option('max-downtime', { type: 'number', describe: 'longest pause allowed at the switch-over (ms)' })
      .option('bandwidth', { type: 'number', describe: 'limit the migration stream (MiB/s)' })
      .option('auto-converge', { type: 'boolean', default: false, describe: 'slow the guest down when pre-copy does not converge' })
      .option('postcopy', { type: 'boolean', default: false, describe: 'switch to post-copy after the first pre-copy pass' })
      .option('postcopy-after', { type: 'number', describe: 'switch to post-copy when pre-copy has not converged after SECONDS' })
      .option('compressed', { type: 'boolean', default: false, describe: 'compress the memory stream (where supported)' })
      .option('keep-source', { type: 'boolean', default: false, describe: 'leave the (stopped) definition on the source' })
      .option('force-accel', { type: 'boolean', default: false, describe: 'allow a move between KVM and TCG hosts' })
      .option('unsafe', { type: 'boolean', default: false, describe: "override libvirt's disk cache safety check" })
      .option('dry-run', { type: 'boolean', default: false, describe: 'run the pre-flight only' })
      .option('recover', { type: 'boolean', default: false, describe: 'only set right what an interrupted migration left' })
      .conflicts('direct', 'tunnelled') as never,
  handler: async (argv) => {
    const { migrateVm } = await import('../../core/migrate/index.js');
    await withOp(argv, 'migrate', async ({ op, ctx, quiet }) => {
      const r = await migrateVm(op, {
        name: argv.name,
        to: argv.to,
        mode: argv.direct ? 'direct' : argv.tunnelled ? 'tunnelled' : 'p2p',
        ...(argv['migrate-uri'] ? { migrateUri: argv['migrate-uri'] } : {}),
        ...(argv['copy-storage'] ? { copyStorage: argv['copy-storage'] } : {}),
        ...(argv['max-downtime'] !== undefined ? { maxDowntimeMs: argv['max-downtime'] } : {}),
        ...(argv.bandwidth !== undefined ? { bandwidthMiB: argv.bandwidth } : {}),
        autoConverge: argv['auto-converge'],
        postcopy: argv.postcopy,
        ...(argv['postcopy-after'] !== undefined ? { postcopyAfterS: argv['postcopy-after'] } : {}),
        compressed: argv.compressed,
        keepSource: argv['keep-source'],
        forceAccel: argv['force-accel'],
        unsafe: argv.unsafe,
        dryRun: argv['dry-run'],
        recoverOnly: argv.recover,
      });
      quiet();
      if (r.plan) {
        // a pre-flight that fails exits as the real command would (scripts can test it)
        if (r.planError) process.exitCode = exitCodeFor(r.planError.code);
        const { internal: _i, ...plan } = r.plan;
        if (ctx.json) return ctx.out.json({ dryRun: true, ...(r.recovered ? { recovered: r.recovered } : {}), plan });
        return printPlan(ctx, r.plan);
      }
      if (r.result) {
        if (ctx.json) return ctx.out.json({ ...(r.recovered ? { recovered: r.recovered } : {}), ...r.result });
        return printResult(ctx, r.result);
      }
      if (ctx.json) return ctx.out.json({ recovered: r.recovered });
      ctx.out.line(r.recovered!.message);
    });
  },
};

const MARK = { pass: 'PASS', warn: 'WARN', fail: 'FAIL' } as const;

function printPlan(ctx: Context, p: MigratePlan): void {
  ctx.out.line(`pre-flight for migrating ${p.name}: ${p.from} → ${p.to} (${p.mode}${p.live ? ', live' : ''}): ${p.ok ? 'ready' : 'not possible'}`);
  for (const c of p.checks) ctx.out.line(`  ${MARK[c.status]}  ${c.message}${c.fix ? `\n        fix: ${c.fix}` : ''}`);
  ctx.out.line('dry run: nothing was changed.');
}

function printResult(ctx: Context, r: MigrateResult): void {
  const s = (ms?: number) => (ms === undefined ? '?' : `${(ms / 1000).toFixed(1)} s`);
  ctx.out.line(`${r.name}: migrated to ${r.to} (${r.mode}), ${r.state} there${r.sourceKept ? '; source definition kept' : ''}`);
  ctx.out.line(`  total time  ${s(r.timeMs)}`);
  ctx.out.line(`  downtime    ${r.downtimeMs === undefined ? '?' : `${r.downtimeMs} ms`}`);
  ctx.out.line(`  transferred ${r.bytes === undefined ? '?' : formatBytes(r.bytes)}${r.diskBytes ? ` (disks ${formatBytes(r.diskBytes)})` : ''}${r.iterations ? `, ${r.iterations} iteration(s)` : ''}`);
  ctx.out.line(`  post-copy   ${r.postcopy ? `yes (switched at ${s(r.postcopySwitchAtMs)})` : 'no'}`);
  if (r.snapshotsCarried.length) ctx.out.line(`  snapshots   carried: ${r.snapshotsCarried.join(', ')}`);
  if (r.disksCopied.length) ctx.out.line(`  disks       copied: ${r.disksCopied.join(', ')}${r.sourceRemoved.length ? `; the source's copies removed (${r.sourceRemoved.length})` : ''}`);
}
