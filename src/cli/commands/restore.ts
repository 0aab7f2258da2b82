/** `vmctl restore DIR`: recreate a backed-up VM on a host (src/core/backup/restore.ts). */
import { resolve } from 'node:path';
import { withOp } from '../op.js';
import { formatBytes } from '../render.js';
import type { Cmd } from '../vm-args.js';

interface RestoreArgs {
  dir: string;
  name?: string;
  pool?: string;
  network?: string;
  at?: string;
  'key-file'?: string;
  'verify-boot': boolean;
  timeout: number;
}

export const restoreCommand: Cmd<RestoreArgs> = {
  command: 'restore <dir>',
  describe: 'recreate the VM of a backup set on this or another host (--connect), verified first',
  builder: (y) =>
    y
      .positional('dir', { type: 'string', demandOption: true, describe: 'backup set directory' })
      .option('name', { type: 'string', requiresArg: true, describe: 'name of the restored VM (default: the original; fresh UUID/MACs for a new name)' })
      .option('pool', { type: 'string', requiresArg: true, describe: 'storage pool for its volumes (default: vmctl)' })
      .option('network', { type: 'string', requiresArg: true, describe: 'libvirt network for its network NICs' })
      .option('at', { type: 'string', requiresArg: true, describe: 'the point to restore (id or unique prefix; default: the newest)' })
      .option('key-file', { type: 'string', requiresArg: true, describe: 'key of an encrypted set' })
      .option('verify-boot', { type: 'boolean', default: false, describe: 'start it and wait for SSH with the pinned host key' })
      .option('timeout', { type: 'number', default: 900, describe: 'seconds to wait for --verify-boot' }) as never,
  handler: async (argv) => {
    const { restoreBackup } = await import('../../core/backup/restore.js'); // loaded by this command only
    await withOp(argv, 'restore', async ({ op, ctx, quiet }) => {
      const r = await restoreBackup(op, {
        dir: resolve(argv.dir),
        ...(argv.name ? { name: argv.name } : {}),
        ...(argv.pool ? { pool: argv.pool } : {}),
        ...(argv.network ? { network: argv.network } : {}),
        ...(argv.at ? { at: argv.at } : {}),
        ...(argv['key-file'] ? { keyFile: argv['key-file'] } : {}),
        verifyBoot: argv['verify-boot'],
        timeoutMs: argv.timeout * 1000,
      });
      quiet();
      if (ctx.json) return ctx.out.json(r);
      ctx.out.line(`${r.name}: restored from ${r.point}${r.chain.length > 1 ? ` (chain of ${r.chain.length})` : ''} on ${r.uri}: ${r.state}`);
      ctx.out.line(`  volumes: ${r.volumes.map((v) => `${v.pool}/${v.name} ${formatBytes(v.bytes)}`).join(', ')}`);
      const ready = r.phases.find((p) => p.phase === 'sshd');
      if (ready) ctx.out.line(`  boot verified: sshd with the pinned host key after ${(ready.atMs / 1000).toFixed(1)} s`);
      if (r.ssh) ctx.out.line(`  ssh: vmctl ssh ${r.name}${argv.connect ? ` -c ${argv.connect}` : ''}   (${r.ssh.user}@${r.ssh.host}:${r.ssh.port}, host key pinned)`);
      for (const n of r.notes) ctx.out.line(`  note: ${n}`);
    });
  },
};
