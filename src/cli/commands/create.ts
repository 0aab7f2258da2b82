/** `vmctl create`: a VM from a template. */
import { readFileSync } from 'node:fs';
import type { Context } from '../context.js';
import { VmctlError } from '../../core/errors.js';
import type { CreatePlan } from '../../core/vm/lifecycle.js';
import { parseLibvirtUri } from '../../libvirt/uri.js';
import { formatBytes } from '../render.js';
import { withOp } from '../op.js';
import { type Cmd, nameArg, vmCore } from '../vm-args.js';

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
  'dry-run': boolean;
}

export const createCommand: Cmd<CreateArgs> = {
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
      .option('timeout', { type: 'number', default: 900, describe: 'seconds to wait for readiness' })
      .option('dry-run', { type: 'boolean', default: false, describe: 'validate and print what would be made; make nothing' }) as never,
  handler: async (argv) => {
    // load the VM core while the connection to libvirt is being opened
    const coreLoading = vmCore();
    coreLoading.catch(() => undefined); // awaited below; a failure is reported there
    const sshKeys = readKeyFiles(argv['ssh-key']);
    await withOp(argv, 'create', async ({ op, ctx, quiet }) => {
      const r = await (await coreLoading).createVm(op, {
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
        dryRun: argv['dry-run'],
      });
      quiet();
      if ('plan' in r) {
        const { internal: _internal, ...plan } = r.plan;
        if (ctx.json) return ctx.out.json({ dryRun: true, plan });
        return printPlan(ctx, plan);
      }
      if (ctx.json) return ctx.out.json(r);
      ctx.out.line(`${r.name}: ${r.state} (${r.domainType === 'kvm' ? 'KVM' : 'TCG'}, image ${r.image})`);
      if (r.ssh) {
        const u = parseLibvirtUri(ctx.uri);
        const fwd = `${r.ssh.user}@${r.ssh.host}:${r.ssh.port}${u.host ? ` on ${u.host}` : ''}`;
        if (u.transport === 'tcp' || u.transport === 'tls') {
          ctx.out.line(`  ssh: ${fwd}, that host's loopback: vmctl ssh ${r.name} needs --connect qemu+ssh://${u.host ?? 'HOST'}/system`);
        } else {
          ctx.out.line(`  ssh: vmctl ssh ${r.name}${argv.connect ? ` -c ${argv.connect}` : ''}   (${fwd}, host key pinned)`);
        }
      }
    });
  },
};

/** --dry-run: what create would make, and nothing made. */
function printPlan(ctx: Context, p: Omit<CreatePlan, 'internal'>): void {
  const rows: [string, string][] = [
    ['VM', `${p.name} (uuid ${p.uuid})`],
    ['Template', p.template],
    ['Image', `${p.image}${p.imagePresent ? '' : ' (not on the host yet: built or uploaded first)'}`],
    ['Accel', `${p.domainType === 'kvm' ? 'KVM' : 'TCG'} (${p.accelReason})`],
    ['Size', `${p.cpus} vCPU, ${formatBytes(p.memoryMiB * 1024 * 1024)}`],
    ['Pool', `${p.pool.name}${p.pool.exists ? (p.pool.path ? ` at ${p.pool.path}` : '') : ' (created first)'}`],
    ...p.volumes.map((v): [string, string] => [
      v.role === 'seed' ? 'Seed' : `Disk ${v.disk}`,
      `${v.name} (${v.format}${v.sizeBytes ? `, ${formatBytes(v.sizeBytes)}` : ''}${v.backingImage ? `, overlay on ${v.backingImage}` : ''}, mode 0600)`,
    ]),
    ...(p.sshPort !== undefined ? [['SSH', `127.0.0.1:${p.sshPort} on the host → guest port 22`] as [string, string]] : []),
    ['Then', p.start ? `start, wait for ${p.wait}` : 'define only'],
    ['State', p.stateDir],
  ];
  ctx.out.line('dry run: nothing was made. create would make:');
  for (const [k, v] of rows) ctx.out.line(`  ${(k + ':').padEnd(11)} ${v}`);
}
