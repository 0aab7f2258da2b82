/** `vmctl lab …`: multi-VM lab exercises (src/core/lab). */
import type { Argv, CommandModule } from 'yargs';
import { makeContext, type GlobalArgs } from '../context.js';
import { withOp } from '../op.js';
import { formatTable } from '../render.js';
import type { Cmd } from '../vm-args.js';
import { VmctlError } from '../../core/errors.js';

const core = () => import('../../core/lab/index.js');

interface PrefixArgs {
  prefix?: string;
}

const labArg = <T>(y: Argv<T>) =>
  y
    .positional('lab', { type: 'string', demandOption: true, describe: 'lab name (as in its file)' })
    .option('prefix', { type: 'string', describe: 'the lab owner prefix (default: your user name)' });

async function idOf(argv: { lab: string } & PrefixArgs): Promise<string> {
  const { defaultPrefix, assertPrefix, labId } = await core();
  return labId(assertPrefix(argv.prefix ?? defaultPrefix()), argv.lab);
}

/** ko_KR.UTF-8 → ko */
function langOf(argv: { lang?: string }): string {
  const l = argv.lang ?? process.env.VMCTL_LANG ?? process.env.LC_ALL ?? process.env.LC_MESSAGES ?? process.env.LANG ?? 'en';
  const m = /^([a-z]{2})/.exec(l);
  return m && m[1] !== 'c' ? m[1]! : 'en';
}

interface UpArgs extends PrefixArgs {
  file: string;
  trust: boolean;
  peer?: string | string[];
  accel?: 'auto' | 'kvm' | 'tcg';
}

const upCommand: Cmd<UpArgs> = {
  command: 'up <file>',
  describe: 'bring a lab up: its networks, then its VMs side by side to SSH-ready, then a baseline snapshot (idempotent: on a lab that is up it only starts stopped VMs and makes deleted ones again; all or nothing)',
  builder: (y) =>
    y
      .positional('file', { type: 'string', demandOption: true, describe: 'a shipped lab name (vmctl lab available) or a lab file' })
      .option('prefix', { type: 'string', describe: 'isolates labs: names, networks and subnets per prefix (default: your user name)' })
      .option('trust', { type: 'boolean', default: false, describe: "let this lab's host-side checks and solution steps run on this machine (listed first)" })
      .option('peer', { type: 'string', requiresArg: true, nargs: 1, describe: 'NAME=URI: a further libvirt host the lab uses (its `peers:`); repeat for several' })
      .option('accel', { choices: ['auto', 'kvm', 'tcg'] as const, describe: 'accelerator for all VMs' }) as never,
  handler: async (argv) => {
    const { labUp, defaultPrefix } = await core();
    const peers: Record<string, string> = {};
    for (const p of ([] as string[]).concat(argv.peer ?? [])) {
      const m = /^([a-z][a-z0-9-]{0,15})=(.+)$/.exec(p);
      if (!m) throw new VmctlError('USAGE', `--peer ${p.slice(0, 60)}: expected NAME=URI`);
      peers[m[1]!] = m[2]!;
    }
    await withOp(argv, 'lab-up', async ({ op, ctx, quiet }) => {
      const r = await labUp(op, {
        lab: argv.file,
        prefix: argv.prefix ?? defaultPrefix(),
        trust: argv.trust,
        peers,
        ...(argv.accel ? { accel: argv.accel } : {}),
      });
      quiet();
      if (ctx.json) return ctx.out.json(r);
      if (r.unchanged) return ctx.out.line(`lab ${r.id} is up already: nothing changed`);
      ctx.out.line(`lab ${r.id} is up (${r.vms.length} VM(s), ${r.networks.length} network(s), ${(r.tookMs / 1000).toFixed(1)} s)${r.replaced ? `; made again from the lab file: ${r.replaced.join(', ')}` : ''}`);
      ctx.out.line(
        formatTable(
          ['VM', 'NAME', 'SSH', 'ADDRESSES'],
          r.vms.map((v) => [v.key, v.name, v.ssh ? `${v.ssh.user}@${v.ssh.host}:${v.ssh.port}` : '-', Object.entries(v.addresses).map(([n, a]) => `${n}=${a}`).join(' ') || '-']),
        ),
      );
      ctx.out.line(`next: vmctl lab exercises ${r.lab}${argv.prefix ? ` --prefix ${argv.prefix}` : ''}`);
    });
  },
};

const downCommand: Cmd<{ lab: string } & PrefixArgs> = {
  command: 'down <lab>',
  describe: 'remove exactly what the lab made: VMs, volumes, networks, snapshots, client state',
  builder: (y) => labArg(y) as never,
  handler: async (argv) => {
    const { labDown } = await core();
    const id = await idOf(argv);
    await withOp(argv, 'lab-down', async ({ op, ctx, quiet }) => {
      const r = await labDown(op, id);
      quiet();
      if (ctx.json) return ctx.out.json(r);
      ctx.out.line(`lab ${id} removed (${r.removedVms.length} VM(s), ${r.removedNetworks.length} network(s))`);
      if (r.leftAlone.length) ctx.err(`vmctl: left alone (not made by this lab): ${r.leftAlone.join(', ')}`);
    });
  },
};

const listCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'list',
  aliases: ['ls'],
  describe: 'the labs on the host (every prefix)',
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { listLabs } = await core();
    const labs = await ctx.withConnection((conn) => listLabs(conn));
    if (ctx.json) return ctx.out.json(labs);
    if (labs.length === 0) return ctx.out.line('no labs (vmctl lab available lists the shipped ones; vmctl lab up NAME brings one up)');
    ctx.out.line(formatTable(['LAB', 'PREFIX', 'STATE', 'VMS', 'SNAPSHOTS'], labs.map((l) => [l.lab, l.prefix, l.state, String(l.vms), l.snapshots.join(',') || '-'])));
    const bad = labs.filter((l) => l.state === 'interrupted');
    if (bad.length) ctx.err(`vmctl: ${bad.map((l) => l.id).join(', ')}: interrupted; vmctl lab down LAB --prefix P removes what it made`);
  },
};

const availableCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'available',
  describe: 'the labs that ship with vmctl',
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { shippedLabs, loadLab, localize } = await core();
    const lang = langOf(argv as { lang?: string });
    const rows = shippedLabs().map((n) => {
      const l = loadLab(n);
      return { name: n, title: localize(l.spec.title, lang), vms: l.spec.vms.reduce((a, v) => a + v.count, 0), exercises: l.spec.exercises.length, peers: l.spec.peers.map((p) => p.name) };
    });
    if (ctx.json) return ctx.out.json(rows);
    ctx.out.line(formatTable(['LAB', 'VMS', 'EXERCISES', 'TITLE'], rows.map((r) => [r.name, String(r.vms), String(r.exercises), r.title])));
  },
};

const validateCommand: CommandModule<GlobalArgs, GlobalArgs & { file: string }> = {
  command: 'validate <file>',
  describe: 'check a lab file (schema and cross-field rules) without making anything',
  builder: (y) => y.positional('file', { type: 'string', demandOption: true }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { loadLab, hostCommands } = await core();
    const l = loadLab(argv.file);
    const host = hostCommands(l.spec);
    if (ctx.json) return ctx.out.json({ ok: true, file: l.file, shipped: l.shipped, hostCommands: host });
    ctx.out.line(`${argv.file}: ok (${l.spec.vms.length} VM entr${l.spec.vms.length === 1 ? 'y' : 'ies'}, ${l.spec.networks.length} network(s), ${l.spec.exercises.length} exercise(s), ${host.length} host command(s))`);
  },
};

const showCommand: CommandModule<GlobalArgs, GlobalArgs & { file: string }> = {
  command: 'show <file>',
  describe: "a lab file's VMs, networks and every host command it would run (read before lab up --trust)",
  builder: (y) => y.positional('file', { type: 'string', demandOption: true }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { loadLab, hostCommands, localize } = await core();
    const l = loadLab(argv.file);
    const host = hostCommands(l.spec);
    if (ctx.json) return ctx.out.json({ file: l.file, shipped: l.shipped, spec: l.spec, hostCommands: host });
    const lang = langOf(argv as { lang?: string });
    ctx.out.line(`${l.spec.name}: ${localize(l.spec.title, lang)}${l.shipped ? ' (ships with vmctl)' : ''}`);
    ctx.out.line(`networks: ${l.spec.networks.map((n) => `${n.name} ${n.subnet} ${n.mode}`).join(', ') || 'none'}`);
    ctx.out.line(`VMs: ${l.spec.vms.map((v) => `${v.name}${v.count > 1 ? `×${v.count}` : ''} (${v.template}${v.networks.length ? `; ${v.networks.map((n) => (typeof n === 'string' ? n : n.network)).join(',')}` : ''})`).join(', ')}`);
    ctx.out.line(`host commands (${host.length}):`);
    for (const h of host) ctx.out.line(`  [${h.exercise} ${h.kind}] ${h.run}`);
  },
};

const statusCommand: Cmd<{ lab: string } & PrefixArgs> = {
  command: 'status <lab>',
  describe: "a lab's VMs, networks and snapshots",
  builder: (y) => labArg(y) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { labStatus } = await core();
    const id = await idOf(argv);
    const s = await ctx.withConnection((conn) => labStatus(conn, id, (uri) => ctx.open(uri)));
    if (ctx.json) return ctx.out.json(s);
    ctx.out.line(`lab ${s.id}: ${s.state}${s.trusted ? ' (trusted)' : ''}; snapshots: ${s.snapshots.join(', ') || 'none'}`);
    ctx.out.line(formatTable(['VM', 'NAME', 'STATE', 'SSH'], s.vmStates.map((v) => [v.key, v.name, v.peer ? `${v.state} on ${v.peer}` : v.state, v.ssh ? `${v.ssh.user}@${v.ssh.host}:${v.ssh.port}` : '-'])));
    if (s.networkStates.length) ctx.out.line(formatTable(['NETWORK', 'NAME', 'SUBNET', 'MODE', 'ACTIVE'], s.networkStates.map((n) => [n.key, n.name, n.subnet, n.mode, String(n.active)])));
  },
};

const sshCommand: Cmd<{ lab: string; vm: string; command?: string[] } & PrefixArgs> = {
  command: 'ssh <lab> <vm> [command..]',
  describe: 'a shell or a command (after --) in a lab VM',
  builder: (y) => labArg(y).positional('vm', { type: 'string', demandOption: true }).positional('command', { type: 'string', array: true }).parserConfiguration({ 'populate--': true }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { labVmName } = await core();
    const { vmSshTarget } = await import('../../core/vm/info.js');
    const { runInGuest, commandWords } = await import('./ssh.js');
    const id = await idOf(argv);
    process.exitCode = await ctx.withConnection(async (conn) => runInGuest(await vmSshTarget(conn, await labVmName(conn, id, argv.vm)), commandWords(argv)));
  },
};

const consoleCommand: Cmd<{ lab: string; vm: string; force?: boolean } & PrefixArgs> = {
  command: 'console <lab> <vm>',
  describe: "a lab VM's serial console (Ctrl-] leaves)",
  builder: (y) =>
    labArg(y)
      .positional('vm', { type: 'string', demandOption: true })
      .option('force', { type: 'boolean', describe: 'take the console over from another session' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { labVmName } = await core();
    const { findVm } = await import('../../core/vm/domain.js');
    const id = await idOf(argv);
    await ctx.withConnection(async (conn) => {
      const name = await labVmName(conn, id, argv.vm);
      const dom = await findVm(conn, name);
      try {
        await (await import('../../core/guest/console.js')).attachConsole(dom, { input: process.stdin, output: process.stdout }, {
          force: argv.force === true,
          onOpen: () => ctx.err(`Connected to ${name}'s serial console. Escape character is ^]`),
        });
      } finally {
        process.stdin.destroy();
      }
    });
  },
};

const exercisesCommand: CommandModule<GlobalArgs, GlobalArgs & { lab: string; lang?: string }> = {
  command: 'exercises <lab>',
  describe: "a lab's exercises and instructions (--lang ko for Korean)",
  builder: (y) =>
    y.positional('lab', { type: 'string', demandOption: true, describe: 'lab name or file' }).option('lang', { type: 'string', describe: 'language (default: from LANG; en, ko)' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { loadLab, localize } = await core();
    const l = loadLab(argv.lab);
    const lang = langOf(argv);
    const list = l.spec.exercises.map((e) => ({ id: e.id, title: localize(e.title, lang), instructions: localize(e.instructions, lang), checks: e.checks.map((c) => ({ name: localize(c.name, lang), on: c.on })) }));
    if (ctx.json) return ctx.out.json({ lab: l.spec.name, title: localize(l.spec.title, lang), description: localize(l.spec.description, lang), exercises: list });
    ctx.out.line(`# ${localize(l.spec.title, lang) || l.spec.name}\n`);
    const desc = localize(l.spec.description, lang);
    if (desc) ctx.out.line(`${desc.trimEnd()}\n`);
    list.forEach((e, i) => {
      ctx.out.line(`## ${i + 1}. ${e.title}  [${e.id}]\n`);
      if (e.instructions) ctx.out.line(`${e.instructions.trimEnd()}\n`);
      if (e.checks.length) ctx.out.line(`checks: ${e.checks.map((c) => c.name).join('; ')}\n`);
    });
  },
};

const snapshotCommand: Cmd<{ lab: string; name: string } & PrefixArgs> = {
  command: 'snapshot <lab> <name>',
  describe: 'snapshot every VM of the lab at one instant (all paused, all snapshotted, all resumed); all or nothing',
  builder: (y) => labArg(y).positional('name', { type: 'string', demandOption: true }) as never,
  handler: async (argv) => {
    const { labSnapshot } = await core();
    const id = await idOf(argv);
    await withOp(argv, 'lab-snapshot', async ({ op, ctx, quiet }) => {
      const r = await labSnapshot(op, id, argv.name);
      quiet();
      if (ctx.json) return ctx.out.json(r);
      ctx.out.line(`lab ${id}: snapshot ${r.snapshot} of ${r.vms.join(', ')}`);
    });
  },
};

const resetCommand: Cmd<{ lab: string; name?: string } & PrefixArgs> = {
  command: 'reset <lab> [name]',
  describe: 'every VM of the lab back to a lab snapshot (default: the baseline lab up took)',
  builder: (y) => labArg(y).positional('name', { type: 'string' }) as never,
  handler: async (argv) => {
    const { labReset } = await core();
    const id = await idOf(argv);
    await withOp(argv, 'lab-reset', async ({ op, ctx, quiet }) => {
      const r = await labReset(op, id, argv.name);
      quiet();
      if (ctx.json) return ctx.out.json(r);
      ctx.out.line(`lab ${id}: ${r.vms.join(', ')} back to ${r.snapshot}`);
    });
  },
};

/** exit status of lab check: the number of failed checks, capped below the statuses with other meanings */
export const MAX_CHECK_EXIT = 100;

const checkCommand: Cmd<{ lab: string; exercise?: string; lang?: string } & PrefixArgs> = {
  command: 'check <lab> [exercise]',
  describe: "run the exercises' checks: pass/fail per check with hints; exit status = failed checks (max 100)",
  builder: (y) => labArg(y).positional('exercise', { type: 'string' }).option('lang', { type: 'string', describe: 'language of names and hints' }) as never,
  handler: async (argv) => {
    const { labCheck } = await core();
    const id = await idOf(argv);
    const r = await withOp({ ...argv, progress: argv.progress === 'json' ? 'json' : 'none' }, 'lab-check', async ({ op, ctx, quiet }) => {
      const res = await labCheck(op, id, { ...(argv.exercise ? { exercise: argv.exercise } : {}), lang: langOf(argv) });
      quiet();
      if (ctx.json) {
        ctx.out.json(res);
        return res;
      }
      for (const c of res.results) {
        ctx.out.line(`${c.passed ? 'PASS' : 'FAIL'}  ${c.exercise}: ${c.check}${c.passed ? '' : c.notRun ? ` (not run: ${c.notRun})` : ` (exit ${c.exit}, wanted ${c.expectedExit}${c.expectedOutput ? `, output matching /${c.expectedOutput}/` : ''})`}`);
        if (!c.passed && c.hint) ctx.out.line(`      hint: ${c.hint.trim().replace(/\n/g, '\n            ')}`);
      }
      ctx.out.line(`${res.passed}/${res.results.length} checks passed`);
      return res;
    });
    process.exitCode = Math.min(r.failed, MAX_CHECK_EXIT);
  },
};

const solveCommand: Cmd<{ lab: string; exercise?: string } & PrefixArgs> = {
  command: 'solve <lab> [exercise]',
  describe: "run the exercises' solution steps (for teachers and CI)",
  builder: (y) => labArg(y).positional('exercise', { type: 'string' }) as never,
  handler: async (argv) => {
    const { labSolve } = await core();
    const id = await idOf(argv);
    await withOp(argv, 'lab-solve', async ({ op, ctx, quiet }) => {
      const r = await labSolve(op, id, argv.exercise ? { exercise: argv.exercise } : {});
      quiet();
      if (ctx.json) return ctx.out.json(r);
      ctx.out.line(`lab ${id}: ${r.steps.length} solution step(s) ran`);
    });
  },
};

export const labCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'lab <command>',
  describe: 'multi-VM lab exercises: up, down, status, ssh, console, exercises, snapshot, reset, check',
  builder: (y) =>
    y
      .command(availableCommand)
      .command(validateCommand)
      .command(showCommand)
      .command(upCommand)
      .command(listCommand)
      .command(statusCommand)
      .command(sshCommand)
      .command(consoleCommand)
      .command(exercisesCommand)
      .command(snapshotCommand)
      .command(resetCommand)
      .command(checkCommand)
      .command(solveCommand)
      .command(downCommand)
      .demandCommand(1),
  handler: () => undefined,
};
