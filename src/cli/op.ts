/**
 * The CLI side of an operation: the context (logger, output, connection),
 * the event renderer chosen by --progress, and one signal policy for every
 * command — the first Ctrl-C or SIGTERM aborts the operation (the core undoes
 * what it made; exit 130), a second one quits at once.
 */
import { makeContext, type Context, type GlobalArgs } from './context.js';
import { createEventRenderer, type ProgressMode } from './events.js';
import { VmctlError } from '../core/errors.js';
import type { OpContext } from '../core/op/context.js';
import { EXIT_INTERRUPTED } from './exit.js';

export interface CliOp {
  op: OpContext;
  ctx: Context;
  /** stop the live line / bars before printing results */
  quiet(): void;
}

export async function withOp<T>(argv: GlobalArgs, kind: string, fn: (c: CliOp) => Promise<T>): Promise<T> {
  const ctx = makeContext(argv);
  const renderer = createEventRenderer({
    mode: (argv.progress ?? 'auto') as ProgressMode,
    json: ctx.json,
    log: ctx.log,
    ...(argv['log-format'] ? { logFormat: argv['log-format'] } : {}),
  });
  const ac = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals > 1) process.exit(EXIT_INTERRUPTED);
    renderer.stop();
    process.stderr.write(`\nvmctl: ${sig === 'SIGINT' ? 'interrupted' : 'terminated'}: undoing what ${kind} made (again to quit at once)\n`);
    ac.abort(new VmctlError('ABORTED', `${kind} interrupted`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const { runOperation } = await import('../core/op/context.js');
    return await runOperation({ kind, open: () => ctx.open(), openUri: (uri) => ctx.open(uri), signal: ac.signal, log: ctx.log, sink: renderer.sink }, (op) =>
      fn({ op, ctx, quiet: () => renderer.stop() }),
    );
  } finally {
    renderer.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
