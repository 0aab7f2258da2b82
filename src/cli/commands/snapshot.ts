/** `vmctl snapshot create|list|info|revert|delete`. */
import type { Argv, CommandModule } from 'yargs';
import type { GlobalArgs } from '../context.js';
import { withOp } from '../op.js';
import { formatBytes } from '../render.js';
import type { Cmd } from '../vm-args.js';

const core = () => import('../../core/snapshot/index.js');

const vmArg = <T>(y: Argv<T>) => y.positional('vm', { type: 'string', demandOption: true, describe: 'VM name' });
const snapArg = <T>(y: Argv<T>) => y.positional('snapshot', { type: 'string', demandOption: true, describe: 'snapshot name' });

function age(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

interface CreateArgs {
  vm: string;
  name?: string;
  description?: string;
  'disk-only': boolean;
  memory: boolean;
  quiesce?: boolean;
  keep?: number;
}

const createCommand: Cmd<CreateArgs> = {
  command: 'create <vm> [name]',
  describe: 'take a snapshot (internal with memory when it works, else external; says why)',
  builder: (y) =>
    vmArg(y)
      .positional('name', { type: 'string', describe: 'snapshot name (default snap-YYYYMMDD-HHMMSS)' })
      .option('description', { type: 'string', describe: 'a note kept with the snapshot' })
      .option('disk-only', { type: 'boolean', default: false, describe: 'external, disks only (no memory state)' })
      .option('memory', { type: 'boolean', default: true, describe: '--no-memory: leave the memory state out (a running guest gets an external disk-only snapshot)' })
      .option('quiesce', { type: 'boolean', describe: 'freeze guest filesystems through qemu-guest-agent for a disk-only snapshot of a running guest (default: when the agent answers; --no-quiesce: never)' })
      .option('keep', { type: 'number', describe: 'keep at most N snapshots: delete the oldest beyond that' }) as never,
  handler: async (argv) => {
    const { createSnapshot } = await core();
    await withOp(argv, 'snapshot', async ({ op, ctx, quiet }) => {
      const r = await createSnapshot(op, argv.vm, {
        ...(argv.name ? { name: argv.name } : {}),
        ...(argv.description !== undefined ? { description: argv.description } : {}),
        diskOnly: argv['disk-only'],
        noMemory: !argv.memory,
        ...(argv.quiesce !== undefined ? { quiesce: argv.quiesce } : {}),
        ...(argv.keep !== undefined ? { keep: argv.keep } : {}),
      });
      quiet();
      if (ctx.json) return ctx.out.json(r);
      ctx.out.line(`${r.vm}: snapshot ${r.name} taken (${r.kind}${r.memory ? ', with memory' : ', disks only'}${r.quiesced ? ', filesystems frozen' : ''})`);
      if (r.pruned.length) ctx.out.line(`  --keep: deleted ${r.pruned.join(', ')}`);
    });
  },
};

const listCommand: Cmd<{ vm: string }> = {
  command: 'list <vm>',
  aliases: ['ls'],
  describe: "a VM's snapshots as a tree (current marked *)",
  builder: (y) => vmArg(y) as never,
  handler: async (argv) => {
    const { listSnapshots } = await core();
    await withOp(argv, 'snapshot-list', async ({ op, ctx }) => {
      const list = await listSnapshots(op.conn, argv.vm);
      if (ctx.json) return ctx.out.json(list);
      if (list.length === 0) return ctx.out.line(`${argv.vm} has no snapshots (vmctl snapshot create ${argv.vm})`);
      const rows = list.map((s) => [
        `${s.current ? '* ' : '  '}${s.depth > 0 ? `${'   '.repeat(s.depth - 1)}└─ ` : ''}${s.name}`,
        s.kind,
        s.state,
        s.memory === 'no' ? 'no' : s.memory,
        s.sizeBytes !== undefined ? formatBytes(s.sizeBytes) : '-',
        age(s.createdAt),
        s.description ?? '',
      ]);
      const head = ['NAME', 'KIND', 'STATE', 'MEMORY', 'SIZE', 'AGE', 'DESCRIPTION'];
      const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
      for (const r of [head, ...rows]) ctx.out.line(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('  ').trimEnd());
    });
  },
};

const infoCommand: Cmd<{ vm: string; snapshot: string }> = {
  command: 'info <vm> <snapshot>',
  describe: 'one snapshot: kind, state, memory, disks and their layers',
  builder: (y) => snapArg(vmArg(y)) as never,
  handler: async (argv) => {
    const { listSnapshots } = await core();
    await withOp(argv, 'snapshot-info', async ({ op, ctx }) => {
      const s = (await listSnapshots(op.conn, argv.vm)).find((x) => x.name === argv.snapshot);
      if (!s) throw new (await import('../../core/errors.js')).VmctlError('NOT_FOUND', `VM ${argv.vm} has no snapshot named '${argv.snapshot}'`, { hint: `see vmctl snapshot list ${argv.vm}` });
      if (ctx.json) return ctx.out.json(s);
      const rows: [string, string][] = [
        ['Name', `${s.name}${s.current ? ' (current)' : ''}`],
        ['Kind', s.kind],
        ['State', s.state],
        ['Memory', s.memory === 'external' ? `external ${s.memoryFile ?? ''}` : s.memory],
        ['Created', s.createdAt],
        ['Parent', s.parent ?? '-'],
        ['Children', s.children.join(', ') || '-'],
        ...(s.description ? [['Description', s.description] as [string, string]] : []),
        ...s.disks.map((d): [string, string] => [`Disk ${d.name}`, d.snapshot === 'external' ? `external: state in ${d.base}, later writes in ${d.overlay}` : d.snapshot]),
      ];
      for (const [k, v] of rows) ctx.out.line(`${(k + ':').padEnd(13)}${v}`);
    });
  },
};

const revertCommand: Cmd<{ vm: string; snapshot: string; running: boolean; paused: boolean; discard: boolean }> = {
  command: 'revert <vm> <snapshot>',
  describe: "bring the VM back to a snapshot (external ones too); the later branch is kept unless --discard",
  builder: (y) =>
    snapArg(vmArg(y))
      .option('running', { type: 'boolean', default: false, describe: 'running afterwards' })
      .option('paused', { type: 'boolean', default: false, describe: 'paused afterwards' })
      .option('discard', { type: 'boolean', default: false, describe: 'external: delete the abandoned branch instead of keeping it' })
      .check((a) => {
        if (a.running && a.paused) throw new Error('--running and --paused exclude each other');
        return true;
      }) as never,
  handler: async (argv) => {
    const { revertSnapshot } = await core();
    await withOp(argv, 'snapshot-revert', async ({ op, ctx, quiet }) => {
      const r = await revertSnapshot(op, argv.vm, argv.snapshot, {
        ...(argv.running ? { state: 'running' as const } : argv.paused ? { state: 'paused' as const } : {}),
        discard: argv.discard,
      });
      quiet();
      if (ctx.json) return ctx.out.json(r);
      ctx.out.line(`${r.vm}: reverted to ${r.snapshot} (${r.kind}), now ${r.state}`);
      if (r.abandoned?.length) ctx.out.line(`  the branch written since: ${r.abandoned.join(', ')} ${r.discarded ? '(deleted)' : '(kept)'}`);
    });
  },
};

const deleteCommand: Cmd<{ vm: string; snapshot: string; children: boolean }> = {
  command: 'delete <vm> <snapshot>',
  aliases: ['rm'],
  describe: 'delete a snapshot (external layers merged back, so chains stay short)',
  builder: (y) => snapArg(vmArg(y)).option('children', { type: 'boolean', default: false, describe: 'also delete its descendants' }) as never,
  handler: async (argv) => {
    const { deleteSnapshot } = await core();
    await withOp(argv, 'snapshot-delete', async ({ op, ctx, quiet }) => {
      const r = await deleteSnapshot(op, argv.vm, argv.snapshot, { children: argv.children });
      quiet();
      if (ctx.json) return ctx.out.json(r);
      ctx.out.line(`${r.vm}: deleted snapshot ${r.deleted.join(', ')}${r.merged.length ? ` (merged ${r.merged.map((m) => `${m.disk}`).join(', ')} back)` : ''}`);
    });
  },
};

export const snapshotCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'snapshot <command>',
  aliases: ['snapshots', 'snap'],
  describe: 'snapshots: create, list, info, revert, delete',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .command(createCommand as never)
      .command(listCommand as never)
      .command(infoCommand as never)
      .command(revertCommand as never)
      .command(deleteCommand as never)
      .demandCommand(1, 'name a snapshot command: create, list, info, revert, delete') as never,
  handler: () => undefined,
};
