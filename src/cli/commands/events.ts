/** `vmctl events`: lifecycle events as they happen (the watch is src/core/vm/events.ts). */
import { makeContext } from '../context.js';
import type { DomainLifecycleEvent } from '../../core/vm/events.js';
import type { Cmd } from '../vm-args.js';

export const eventsCommand: Cmd<{ name?: string }> = {
  command: 'events [name]',
  describe: 'print lifecycle events as they happen (Ctrl-C stops)',
  builder: (y) => y.positional('name', { type: 'string', describe: 'only this VM' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const render = (e: DomainLifecycleEvent) => {
      if (ctx.json) process.stdout.write(JSON.stringify({ time: e.receivedAt.toISOString(), vm: e.domain.name, event: e.event, detail: e.detail }) + '\n');
      else ctx.out.line(`${e.receivedAt.toISOString()}  ${e.domain.name}  ${e.event} (detail ${e.detail})`);
    };
    await ctx.withConnection(async (conn) => {
      // Ctrl-C / SIGTERM stop the watch once connected (before that they end the process as usual)
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        await (await import('../../core/vm/events.js')).watchVmEvents(conn, { name: argv.name, signal: stop.signal }, render);
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
  },
};
