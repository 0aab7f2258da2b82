/** `vmctl events`: lifecycle events as they happen. */
import { makeContext } from '../context.js';
import type { DomainLifecycleEvent } from '../../libvirt/connection.js';
import type { Cmd } from '../vm-args.js';

export const eventsCommand: Cmd<{ name?: string }> = {
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
