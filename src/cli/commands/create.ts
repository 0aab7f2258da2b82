/** `vmctl create`: a VM from a template. */
import { readFileSync } from 'node:fs';
import { makeContext } from '../context.js';
import { VmctlError } from '../../core/errors.js';
import type { PhaseEvent } from '../../core/vm/lifecycle.js';
import { parseLibvirtUri } from '../../libvirt/uri.js';
import { createProgressRenderer } from '../progress.js';
import { type Cmd, nameArg, vmCore, showPhase } from '../vm-args.js';

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
      .option('timeout', { type: 'number', default: 900, describe: 'seconds to wait for readiness' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    // load the VM core while the connection to libvirt is being opened
    const coreLoading = vmCore();
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
