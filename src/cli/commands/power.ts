/** One-line power verbs: reboot, suspend, resume, destroy. */
import { withOp } from '../op.js';
import { type Cmd, nameArg, vmCore } from '../vm-args.js';

/** A one-line verb: find the VM, do one thing, say so. */
type Verb = 'rebootVm' | 'suspendVm' | 'resumeVm' | 'destroyVm';

function simpleVerb(verb: string, describe: string, fn: Verb, done: string): Cmd<{ name: string }> {
  return {
    command: `${verb} <name>`,
    describe,
    builder: (y) => nameArg(y) as never,
    handler: async (argv) => {
      const run = (await vmCore())[fn];
      await withOp(argv, verb, async ({ op, ctx }) => {
        await run(op, argv.name);
        if (ctx.json) ctx.out.json({ name: argv.name, result: done });
        else ctx.out.line(`${argv.name}: ${done}`);
      });
    },
  };
}

export const powerCommands = [
  simpleVerb('reboot', 'reboot a VM (ACPI)', 'rebootVm', 'rebooting'),
  simpleVerb('suspend', 'pause a running VM', 'suspendVm', 'suspended'),
  simpleVerb('resume', 'resume a paused VM', 'resumeVm', 'resumed'),
  simpleVerb('destroy', 'power a VM off at once (like pulling the plug)', 'destroyVm', 'destroyed'),
];
