import type { CommandModule } from 'yargs';
import { makeContext, type GlobalArgs } from '../context.js';


export const versionCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'version',
  describe: 'show client, libvirt and hypervisor versions',
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { getVersions } = await import('../../core/host/version.js');
    const v = await ctx.withConnection((conn) => getVersions(conn));
    if (ctx.json) return ctx.out.json(v);
    ctx.out.line(`vmctl:       ${v.client.vmctl} (protocol from ${v.client.protocolFrom})`);
    ctx.out.line(`libvirt:     ${v.libvirt.version} (${v.uri})`);
    ctx.out.line(`hypervisor:  ${v.hypervisor.type} ${v.hypervisor.version}`);
    ctx.out.line(`host:        ${v.hostname}`);
  },
};
