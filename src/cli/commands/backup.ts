/** `vmctl backup VM --to DIR`, `vmctl backup list|verify|prune DIR`: backup sets (src/core/backup). */
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { makeContext, type GlobalArgs } from '../context.js';
import { withOp } from '../op.js';
import { VmctlError } from '../../core/errors.js';
import { formatBytes, formatTable } from '../render.js';
import type { StartJobGuard } from '../../core/backup/guard.js';

type Cmd<A> = CommandModule<GlobalArgs, GlobalArgs & A>;

interface TakeArgs {
  name: string;
  to: string;
  incremental: boolean;
  compress: boolean;
  encrypt: boolean;
  'key-file'?: string;
}

const takeCommand: Cmd<TakeArgs> = {
  command: '$0 <name>',
  describe: 'back up a VM (running or not) into a backup set directory',
  builder: (y) =>
    y
      .positional('name', { type: 'string', demandOption: true, describe: 'VM name' })
      .option('to', { type: 'string', demandOption: true, requiresArg: true, describe: 'backup set directory on this machine (created 0700)' })
      .option('incremental', { alias: 'i', type: 'boolean', default: false, describe: 'only what changed since the set\'s last point (dirty bitmaps; else full, saying why)' })
      .option('compress', { type: 'boolean', default: false, describe: 'gzip each chunk' })
      .option('encrypt', { type: 'boolean', default: false, describe: 'AES-256-GCM per chunk (needs --key-file)' })
      .option('key-file', { type: 'string', requiresArg: true, describe: 'file with ≥ 32 random bytes (head -c 32 /dev/urandom > F)' }) as never,
  handler: async (argv) => {
    await withOp(argv, 'backup', async ({ op, ctx, quiet }) => {
      const { takeBackup } = await import('../../core/backup/take.js');
      const r = await takeBackup(op, {
        name: argv.name,
        dir: resolve(argv.to),
        incremental: argv.incremental,
        compress: argv.compress,
        encrypt: argv.encrypt,
        ...(argv['key-file'] ? { keyFile: argv['key-file'] } : {}),
        guard: startGuard,
      });
      quiet();
      if (ctx.json) return ctx.out.json(r);
      const via = { pull: 'read from the running guest\'s point-in-time export', push: 'copied by a backup job into scratch volumes', volumes: 'read from the stopped guest\'s volumes' }[r.via];
      ctx.out.line(`${r.vm}: ${r.kind} backup ${r.point}${r.parent ? ` (on ${r.parent})` : ''} in ${r.dir}`);
      ctx.out.line(`  ${r.disks.map((d) => `${d.target} ${formatBytes(d.dataBytes)} of ${formatBytes(d.virtualSize)}`).join(', ') || 'no disks'}; stored ${formatBytes(r.storedBytes)}; ${via}`);
      ctx.out.line(`  ${(r.durationMs / 1000).toFixed(1)} s, ${formatBytes(r.bytesPerSecond)}/s of disk data; ${r.consistency.quiesced ? 'consistent: ' : ''}${r.consistency.how}`);
      for (const n of r.notes) ctx.out.line(`  note: ${n}`);
    });
  },
};

const listCommand: Cmd<{ dir: string }> = {
  command: 'list <dir>',
  aliases: ['ls'],
  describe: 'the points of a backup set: full/incremental, time, size, chain',
  builder: (y) => y.positional('dir', { type: 'string', demandOption: true }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { listSet } = await import('../../core/backup/verify.js');
    const l = listSet(resolve(argv.dir));
    if (ctx.json) return ctx.out.json(l);
    ctx.out.line(`backup set of ${l.vm} in ${l.dir}${l.encrypted ? ' (encrypted)' : ''}`);
    ctx.out.line(
      formatTable(
        ['POINT', 'KIND', 'TIME', 'DATA', 'STORED', 'CHAIN'],
        l.points.map((p) => [p.id, p.kind, p.createdAt, formatBytes(p.dataBytes), formatBytes(p.storedBytes), p.chain.length > 1 ? `${p.chain.length - 1} on ${p.chain[0]}` : p.kind === 'full' ? '-' : 'BROKEN']),
      ),
    );
    for (const b of l.broken) ctx.err(`vmctl: point ${b.id}: ${b.problem}`);
    for (const p of l.partial) ctx.err(`vmctl: ${p}: partial (an interrupted backup; the next backup removes it)`);
  },
};

const verifyCommand: Cmd<{ dir: string; 'key-file'?: string }> = {
  command: 'verify <dir>',
  describe: 'recompute every checksum and check the chains; exit non-zero naming file and offset of any damage',
  builder: (y) =>
    y.positional('dir', { type: 'string', demandOption: true }).option('key-file', { type: 'string', requiresArg: true, describe: 'also authenticate every chunk (encrypted sets)' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { verifySet } = await import('../../core/backup/verify.js');
    const r = await verifySet(resolve(argv.dir), argv['key-file'] ? { keyFile: argv['key-file'] } : {});
    if (ctx.json) {
      if (r.ok) ctx.out.json(r); // else the error (on stdout too, with --json) carries the problems
    } else {
      ctx.out.line(`${r.ok ? 'OK' : 'DAMAGED'}: ${r.points} points, ${r.files} files, ${r.chunks} chunks, ${formatBytes(r.bytes)} checked${r.authenticated ? ', authenticated' : ''}`);
      for (const p of r.problems) ctx.out.line(`  ${p.point}: ${p.file ?? ''}${p.offset !== undefined ? ` at offset ${p.offset}` : ''}: ${p.problem}`);
    }
    if (!r.ok) {
      const p = r.problems[0]!;
      throw new VmctlError('INVALID_INPUT', `backup set ${r.dir} is damaged: ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}, first ${p.file ?? p.point}${p.offset !== undefined ? ` at offset ${p.offset}` : ''}: ${p.problem}`, {
        details: { problems: r.problems },
      });
    }
  },
};

const pruneCommand: Cmd<{ dir: string; 'keep-last': number; 'dry-run': boolean }> = {
  command: 'prune <dir>',
  describe: 'remove old points, never one that a kept incremental needs',
  builder: (y) =>
    y
      .positional('dir', { type: 'string', demandOption: true })
      .option('keep-last', { type: 'number', demandOption: true, requiresArg: true, describe: 'keep the newest N points (and their chains)' })
      .option('dry-run', { type: 'boolean', default: false, describe: 'say what would be removed' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { pruneSet } = await import('../../core/backup/verify.js');
    const r = pruneSet(resolve(argv.dir), argv['keep-last'], { dryRun: argv['dry-run'] });
    if (ctx.json) return ctx.out.json(r);
    ctx.out.line(`${argv['dry-run'] ? 'would remove' : 'removed'} ${r.removed.length} point${r.removed.length === 1 ? '' : 's'}${r.removed.length ? `: ${r.removed.join(', ')}` : ''}; kept ${r.kept.length}`);
    if (r.keptForChains.length) ctx.out.line(`  kept for the chains of newer points: ${r.keptForChains.join(', ')}`);
  },
};

/**
 * A pull-mode job's guard (core/backup/guard.ts): this CLI again, detached, `__backup-guard VM OPID`,
 * its stdin a pipe from this process; 'done' on it, or its closing once this process is gone.
 */
const startGuard: StartJobGuard = ({ uri, vm, opId }) => {
  const entry = process.argv[1];
  if (!entry) return { release: () => undefined };
  const env = { ...process.env };
  delete env['VMCTL_FAULT']; // a test's fault point is the backup's, never the guard's
  const child = spawn(process.execPath, [entry, '--connect', uri, '__backup-guard', vm, opId], { detached: true, stdio: ['pipe', 'ignore', 'ignore'], env });
  child.on('error', () => undefined);
  child.stdin!.on('error', () => undefined);
  child.unref();
  (child.stdin as unknown as Socket).unref();
  return { release: () => child.stdin!.end('done\n') };
};

export const backupGuardCommand: CommandModule<GlobalArgs, GlobalArgs & { name: string; op: string }> = {
  command: '__backup-guard <name> <op>',
  describe: false,
  builder: (y) => y.positional('name', { type: 'string', demandOption: true }).positional('op', { type: 'string', demandOption: true }) as never,
  handler: async (argv) => {
    let input = '';
    process.stdin.setEncoding('utf8');
    for await (const d of process.stdin) input += d as string;
    if (input.includes('done')) return;
    await withOp(argv, 'backup-guard', async ({ op }) => {
      const { reapInterruptedBackup } = await import('../../core/backup/guard.js');
      await reapInterruptedBackup(op, argv.name, argv.op);
    });
  },
};

export const backupCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'backup',
  describe: 'backups: vmctl backup VM --to DIR; backup list|verify|prune DIR',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .command(listCommand as never)
      .command(verifyCommand as never)
      .command(pruneCommand as never)
      .command(takeCommand as never) as never,
  handler: () => undefined,
};
