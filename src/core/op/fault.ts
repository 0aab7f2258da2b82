/**
 * Test-only fault injection: VMCTL_FAULT names points where the process is
 * stopped on purpose, so tests can prove that an operation killed at any step
 * leaves a state vmctl recognises — deterministically, without guessing with
 * sleeps. Documented in DEVELOPERS.md.
 *
 *   VMCTL_FAULT=create:after-volumes:kill       SIGKILL itself at that point
 *   VMCTL_FAULT=create:after-define:throw       fail there (exercises undo)
 *   VMCTL_FAULT=create:after-define:sleep=5000  pause there (e.g. to restart libvirtd meanwhile)
 *
 * Several points may be given, separated by commas. Unset (always, outside
 * tests) it costs one environment lookup per point.
 */
import { VmctlError } from '../errors.js';

export type FaultAction = { kind: 'kill' } | { kind: 'throw' } | { kind: 'sleep'; ms: number };

export function parseFaults(spec: string | undefined): Map<string, FaultAction> {
  const out = new Map<string, FaultAction>();
  if (!spec) return out;
  for (const item of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^([a-z-]+:[a-z0-9-]+):(kill|throw|sleep=(\d{1,7}))$/.exec(item);
    if (!m) {
      throw new VmctlError('USAGE', `VMCTL_FAULT: ${JSON.stringify(item)} is not OP:POINT:kill|throw|sleep=MS`, {
        hint: 'e.g. VMCTL_FAULT=create:after-volumes:kill (a test-only knob; unset it for normal use)',
      });
    }
    const action: FaultAction = m[2] === 'kill' ? { kind: 'kill' } : m[2] === 'throw' ? { kind: 'throw' } : { kind: 'sleep', ms: Number(m[3]) };
    out.set(m[1]!, action);
  }
  return out;
}

let parsed: { spec: string | undefined; faults: Map<string, FaultAction> } | undefined;

/** The action configured for `op:point`, if any. */
export function faultAt(op: string, point: string, env: NodeJS.ProcessEnv = process.env): FaultAction | undefined {
  const spec = env.VMCTL_FAULT;
  if (!spec) return undefined;
  if (!parsed || parsed.spec !== spec) parsed = { spec, faults: parseFaults(spec) };
  return parsed.faults.get(`${op}:${point}`);
}

/** Carry out a fault action (after it was announced); a sleep ends early when `signal` aborts (Ctrl-C). */
export async function performFault(point: string, action: FaultAction, signal?: AbortSignal): Promise<void> {
  switch (action.kind) {
    case 'kill':
      process.kill(process.pid, 'SIGKILL');
      // SIGKILL is delivered at once; never go on past a kill point
      await new Promise(() => undefined);
      return;
    case 'throw':
      throw new VmctlError('INTERNAL', `injected fault at ${point} (VMCTL_FAULT)`);
    case 'sleep':
      await new Promise<void>((r) => {
        if (signal?.aborted) return r();
        const done = () => {
          clearTimeout(t);
          signal?.removeEventListener('abort', done);
          r();
        };
        const t = setTimeout(done, action.ms);
        signal?.addEventListener('abort', done, { once: true });
      });
      return;
  }
}
