/** `vmctl info` and `vmctl ip`. */
import { makeContext } from '../context.js';
import { VmctlError } from '../../core/errors.js';
import { formatBytes } from '../render.js';
import { type Cmd, nameArg, vmCore } from '../vm-args.js';

export const infoCommand: Cmd<{ name: string }> = {
  command: 'info <name>',
  describe: 'state, vCPUs, memory, disks, IPs and accelerator of a VM',
  builder: (y) => nameArg(y) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { vmInfo } = await vmCore();
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

export const ipCommand: Cmd<{ name: string }> = {
  command: 'ip <name>',
  describe: "print a running VM's IP addresses (DHCP lease, guest agent, ARP)",
  builder: (y) => nameArg(y) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { findVm, guestAddresses } = await vmCore();
    const a = await ctx.withConnection(async (conn) => guestAddresses(await findVm(conn, argv.name)));
    if (!a) throw new VmctlError('NOT_FOUND', `no IP address known for ${argv.name} yet`, { hint: 'is it running and booted? the guest agent reports addresses for user-mode NICs' });
    if (ctx.json) return ctx.out.json({ name: argv.name, source: a.source, addresses: a.addrs });
    for (const ip of a.addrs) ctx.out.line(ip);
  },
};
