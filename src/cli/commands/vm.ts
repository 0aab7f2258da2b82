/** VM lifecycle commands: thin wrappers over src/core/lifecycle.ts. */
import { readFileSync } from 'node:fs';
import type { Argv, CommandModule } from 'yargs';
import { makeContext, type Context, type GlobalArgs } from '../context.js';
import { VmctlError } from '../../core/errors.js';
import type { PhaseEvent } from '../../core/vm/lifecycle.js';
// the core (templates/ajv, images, cloud-init, ssh2) loads only when a VM command runs
const core = () => import('../../core/vm/lifecycle.js');
const ssh = () => import('../../core/guest/ssh.js');
import type { DomainLifecycleEvent } from '../../libvirt/connection.js';
import { parseLibvirtUri } from '../../libvirt/uri.js';
import { formatBytes } from '../render.js';
import { createProgressRenderer } from '../progress.js';

type Cmd<A> = CommandModule<GlobalArgs, GlobalArgs & A>;

const nameArg = <T>(y: Argv<T>) => y.positional('name', { type: 'string', demandOption: true, describe: 'VM name' });

/** A one-line verb: find the VM, do one thing, say so. */
type Verb = 'rebootVm' | 'suspendVm' | 'resumeVm' | 'destroyVm';

function simpleVerb(verb: string, describe: string, fn: Verb, done: string): Cmd<{ name: string }> {
  return {
    command: `${verb} <name>`,
    describe,
    builder: (y) => nameArg(y) as never,
    handler: async (argv) => {
      const ctx = makeContext(argv);
      const run = (await core())[fn];
      await ctx.withConnection((conn) => run(conn, argv.name));
      if (ctx.json) ctx.out.json({ name: argv.name, result: done });
      else ctx.out.line(`${argv.name}: ${done}`);
    },
  };
}

/** one readiness phase with its time since the command started, on stderr */
function showPhase(ctx: Context, e: PhaseEvent): void {
  if (!ctx.json) ctx.err(`  ${e.phase.padEnd(10)} ${(e.atMs / 1000).toFixed(1).padStart(6)} s${e.detail ? `  ${e.detail}` : ''}`);
}

function readKeyFiles(files: string[] | undefined): string[] | undefined {
  if (!files?.length) return undefined;
  return files.map((f) => {
    try {
      return readFileSync(f, 'utf8').trim();
    } catch (e) {
      throw new VmctlError('INVALID_INPUT', `--ssh-key ${f}: ${(e as Error).message}`, { hint: 'give the path of a public key file (.pub)' });
    }
  });
}

interface CreateArgs {
  name: string;
  template?: string;
  image?: string;
  cpus?: number;
  memory?: string;
  'disk-size'?: string;
  network?: string;
  'ssh-key'?: string[];
  accel: 'auto' | 'kvm' | 'tcg';
  start: boolean;
  wait?: 'ssh' | 'ip' | 'none';
  timeout: number;
}

const createCommand: Cmd<CreateArgs> = {
  command: 'create <name>',
  describe: 'create a VM from a template (define, start, wait until it is ready)',
  builder: (y) =>
    nameArg(y)
      .option('template', { alias: 't', type: 'string', describe: 'template name (vmctl templates in vm-templates/ or ~/.config/vmctl/templates)' })
      .option('image', { type: 'string', describe: 'base image (default: the template\'s, else debian-12, built offline if missing)' })
      .option('cpus', { type: 'number', describe: 'vCPUs' })
      .option('memory', { type: 'string', describe: 'memory, e.g. 1GiB or 768 (MiB)' })
      .option('disk-size', { type: 'string', describe: 'root disk size, e.g. 10GiB' })
      .option('network', { type: 'string', describe: 'NIC: user, NAME (libvirt network), network=NAME or bridge=BR' })
      .option('ssh-key', { type: 'string', array: true, describe: 'public key file(s) to authorize (default: a per-VM key vmctl keeps)' })
      .option('accel', { choices: ['auto', 'kvm', 'tcg'] as const, default: 'auto' as const, describe: 'KVM only when it really works (probed), else TCG' })
      .option('start', { type: 'boolean', default: true, describe: 'start it (--no-start: define only)' })
      .option('wait', {
        choices: ['ssh', 'ip', 'none'] as const,
        describe: 'what "ready" means (default: ssh; ip over qemu+tcp/qemu+tls, which cannot reach the guest\'s SSH forward)',
      })
      .option('timeout', { type: 'number', default: 900, describe: 'seconds to wait for readiness' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    // load the VM core while the connection to libvirt is being opened
    const coreLoading = core();
    coreLoading.catch(() => undefined); // awaited below; a failure is reported there
    const controller = new AbortController();
    const onSigint = () => controller.abort();
    process.once('SIGINT', onSigint);
    const progress = createProgressRenderer({ log: ctx.log, logFormat: argv['log-format'] });
    try {
      const sshKeys = readKeyFiles(argv['ssh-key']);
      const result = await ctx.withConnection(async (conn) =>
        (await coreLoading).createVm(
          conn,
          {
            name: argv.name,
            ...(argv.template ? { template: argv.template } : {}),
            overrides: {
              ...(argv.cpus !== undefined ? { cpus: argv.cpus } : {}),
              ...(argv.memory !== undefined ? { memory: argv.memory } : {}),
              ...(argv['disk-size'] !== undefined ? { diskSize: argv['disk-size'] } : {}),
              ...(argv.image !== undefined ? { image: argv.image } : {}),
              ...(argv.network !== undefined ? { network: argv.network } : {}),
              ...(sshKeys ? { sshKeys } : {}),
            },
            accel: argv.accel,
            start: argv.start,
            ...(argv.start ? (argv.wait ? { wait: argv.wait } : {}) : { wait: 'none' as const }),
            timeoutMs: argv.timeout * 1000,
          },
          {
            log: ctx.log,
            signal: controller.signal,
            onWarning: (m) => ctx.warn(m),
            onProgress: (p) => progress.onProgress(p),
            onPhase: (e: PhaseEvent) => {
              progress.stop();
              showPhase(ctx, e);
            },
          },
        ),
      );
      if (ctx.json) return ctx.out.json(result);
      ctx.out.line(`${result.name}: ${result.state} (${result.domainType === 'kvm' ? 'KVM' : 'TCG'}, image ${result.image})`);
      if (result.ssh) {
        const u = parseLibvirtUri(ctx.uri);
        const fwd = `${result.ssh.user}@${result.ssh.host}:${result.ssh.port}${u.host ? ` on ${u.host}` : ''}`;
        if (u.transport === 'tcp' || u.transport === 'tls') {
          ctx.out.line(`  ssh: ${fwd}, that host's loopback: vmctl ssh ${result.name} needs --connect qemu+ssh://${u.host ?? 'HOST'}/system`);
        } else {
          ctx.out.line(`  ssh: vmctl ssh ${result.name}${argv.connect ? ` -c ${argv.connect}` : ''}   (${fwd}, host key pinned)`);
        }
      }
    } finally {
      progress.stop();
      process.off('SIGINT', onSigint);
    }
  },
};

const startCommand: Cmd<{ name: string; wait: 'ssh' | 'ip' | 'none'; timeout: number }> = {
  command: 'start <name>',
  describe: 'start a stopped VM (--wait ssh|ip to wait until it is ready)',
  builder: (y) =>
    nameArg(y)
      .option('wait', { choices: ['ssh', 'ip', 'none'] as const, default: 'none' as const, describe: 'what to wait for' })
      .option('timeout', { type: 'number', default: 900, describe: 'seconds to wait for readiness' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { startVm } = await core();
    const r = await ctx.withConnection((conn) =>
      startVm(conn, argv.name, { wait: argv.wait, timeoutMs: argv.timeout * 1000 }, {
        log: ctx.log,
        onPhase: (e) => showPhase(ctx, e),
      }),
    );
    if (ctx.json) return ctx.out.json({ name: argv.name, result: 'started', ...r });
    ctx.out.line(`${argv.name}: started`);
  },
};

const stopCommand: Cmd<{ name: string; force: boolean; timeout: number }> = {
  command: 'stop <name>',
  describe: 'shut a VM down (ACPI), waiting for it; --force powers it off after --timeout',
  builder: (y) =>
    nameArg(y)
      .option('force', { type: 'boolean', default: false, describe: 'power off if it has not shut down in time' })
      .option('timeout', { type: 'number', default: 120, describe: 'seconds to wait for the guest to shut down' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { stopVm } = await core();
    const r = await ctx.withConnection((conn) => stopVm(conn, argv.name, { force: argv.force, timeoutMs: argv.timeout * 1000 }));
    if (ctx.json) return ctx.out.json({ name: argv.name, result: 'stopped', forced: r.forced });
    ctx.out.line(`${argv.name}: stopped${r.forced ? ' (forced off after the timeout)' : ''}`);
  },
};

const deleteCommand: Cmd<{ name: string }> = {
  command: 'delete <name>',
  aliases: ['rm'],
  describe: 'remove a VM: power off, undefine, delete the volumes vmctl created for it',
  builder: (y) => nameArg(y) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { deleteVm } = await core();
    const r = await ctx.withConnection((conn) => deleteVm(conn, argv.name, ctx.log));
    if (ctx.json) return ctx.out.json({ name: argv.name, result: 'deleted', ...r });
    ctx.out.line(`${argv.name}: deleted${r.removedVolumes.length ? ` (volumes removed: ${r.removedVolumes.join(', ')})` : ''}`);
  },
};

const infoCommand: Cmd<{ name: string }> = {
  command: 'info <name>',
  describe: 'state, vCPUs, memory, disks, IPs and accelerator of a VM',
  builder: (y) => nameArg(y) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { vmInfo } = await core();
    const i = await ctx.withConnection((conn) => vmInfo(conn, argv.name));
    if (ctx.json) return ctx.out.json(i);
    const rows: [string, string][] = [
      ['Name', i.name],
      ['UUID', i.uuid],
      ['State', i.state],
      ['Accel', `${i.accel.toUpperCase()} (domain type ${i.domainType})`],
      ['vCPUs', String(i.vcpus)],
      ['Memory', formatBytes(i.memoryMiB * 1024 * 1024)],
      ...i.disks.map((d): [string, string] => [`Disk ${d.target}`, `${d.device}${d.source ? ` ${d.source}` : ''}`]),
      ['IPs', i.ips.length ? `${i.ips.join(', ')} (${i.ipSource})` : '-'],
      ...(i.ssh ? [['SSH', `${i.ssh.user}@${i.ssh.host}:${i.ssh.port}`] as [string, string]] : []),
      ...(i.template ? [['Template', i.template] as [string, string]] : []),
      ...(i.image ? [['Image', i.image] as [string, string]] : []),
    ];
    for (const [k, v] of rows) ctx.out.line(`${(k + ':').padEnd(12)}${v}`);
  },
};

const ipCommand: Cmd<{ name: string }> = {
  command: 'ip <name>',
  describe: "print a running VM's IP addresses (DHCP lease, guest agent, ARP)",
  builder: (y) => nameArg(y) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { findVm, guestAddresses } = await core();
    const a = await ctx.withConnection(async (conn) => guestAddresses(await findVm(conn, argv.name)));
    if (!a) throw new VmctlError('NOT_FOUND', `no IP address known for ${argv.name} yet`, { hint: 'is it running and booted? the guest agent reports addresses for user-mode NICs' });
    if (ctx.json) return ctx.out.json({ name: argv.name, source: a.source, addresses: a.addrs });
    for (const ip of a.addrs) ctx.out.line(ip);
  },
};

const sshCommand: Cmd<{ name: string; command?: string[] }> = {
  command: 'ssh <name> [command..]',
  describe: 'open a shell in the VM, or run a command (after --): exit code propagated; host key verified strictly',
  builder: (y) => nameArg(y).positional('command', { type: 'string', array: true }).parserConfiguration({ 'populate--': true }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { vmSshTarget } = await core();
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

const consoleCommand: Cmd<{ name: string }> = {
  command: 'console <name>',
  describe: "attach to the VM's serial console (Ctrl-] leaves)",
  builder: (y) => nameArg(y) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { findVm } = await core();
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

const eventsCommand: Cmd<{ name?: string }> = {
  command: 'events [name]',
  describe: 'print lifecycle events as they happen (Ctrl-C stops)',
  builder: (y) => y.positional('name', { type: 'string', describe: 'only this VM' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    await ctx.withConnection(async (conn) => {
      const onEvent = (e: DomainLifecycleEvent) => {
        if (argv.name && e.domain.name !== argv.name) return;
        if (ctx.json) process.stdout.write(JSON.stringify({ time: e.receivedAt.toISOString(), vm: e.domain.name, event: e.event, detail: e.detail }) + '\n');
        else ctx.out.line(`${e.receivedAt.toISOString()}  ${e.domain.name}  ${e.event} (detail ${e.detail})`);
      };
      conn.on('lifecycle', onEvent);
      await conn.subscribeLifecycle();
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
        conn.once('close', () => resolve());
      });
      await conn.unsubscribeLifecycle().catch(() => undefined);
    });
  },
};

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const vmCommands: CommandModule<any, any>[] = [
  createCommand,
  startCommand,
  stopCommand,
  simpleVerb('reboot', 'reboot a VM (ACPI)', 'rebootVm', 'rebooting'),
  simpleVerb('suspend', 'pause a running VM', 'suspendVm', 'suspended'),
  simpleVerb('resume', 'resume a paused VM', 'resumeVm', 'resumed'),
  simpleVerb('destroy', 'power a VM off at once (like pulling the plug)', 'destroyVm', 'destroyed'),
  deleteCommand,
  infoCommand,
  ipCommand,
  sshCommand,
  consoleCommand,
  eventsCommand,
];

export type { Context };
