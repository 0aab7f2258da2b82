/** start, stop, reboot, suspend, resume, destroy. */
import { VmctlError } from '../errors.js';
import type { OpContext } from '../op/context.js';
import { parseOpMarker } from '../op/journal.js';
import { findVm, incompleteError, missingBackingError } from './domain.js';
import { isForwardPortTaken } from './forward.js';
import { phaseRecorder, waitReady, type PhaseEvent, type WaitTarget } from './readiness.js';
import { vmSshTarget } from './info.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startVm(op: OpContext, name: string, opts: { wait?: WaitTarget; timeoutMs?: number } = {}): Promise<{ phases: PhaseEvent[]; ip?: string }> {
  const conn = op.conn;
  const { phases, phase } = phaseRecorder(op);
  const dom = await findVm(conn, name);
  await op.lease(`vm/${name}`, `VM '${name}'`);
  const xml = await dom.xml();
  let marker = parseOpMarker(xml);
  if (marker?.op.startsWith('snapshot')) {
    await (await import('../snapshot/recover.js')).settleSnapshotState(op, dom);
    marker = null;
  }
  if (marker) {
    throw incompleteError(name, marker, xml);
  }
  if ((await dom.state()).state === 'running') throw new VmctlError('CONFLICT', `VM ${name} is already running`);
  const ssh = opts.wait === 'ssh' ? await vmSshTarget(conn, name, { running: false }) : undefined;
  try {
    await dom.start();
  } catch (e) {
    const missing = missingBackingError(name, e);
    if (missing) throw missing;
    if (!isForwardPortTaken(e)) throw e;
    const fwd = /host forwarding rule '(?:tcp|udp):([^']+)'/i.exec((e as Error).message)?.[1] ?? 'a forwarded port';
    throw new VmctlError('CONFLICT', `VM ${name} cannot start: ${fwd} (its port forward) is taken on ${conn.uri.host ?? 'this machine'}`, {
      hint: `stop what listens there (ss -ltnp shows it), then vmctl start ${name}`,
      cause: e,
    });
  }
  phase('started');
  const wait = opts.wait ?? 'none';
  if (wait === 'none') return { phases };
  const r = await waitReady(op, dom, { target: wait, ...(ssh ? { ssh } : {}), timeoutMs: opts.timeoutMs ?? 15 * 60_000, phase });
  return { phases, ...(r.ip ? { ip: r.ip } : {}) };
}

export async function stopVm(op: OpContext, name: string, opts: { force?: boolean; timeoutMs?: number } = {}): Promise<{ forced: boolean }> {
  const dom = await findVm(op.conn, name);
  const st = (await dom.state()).state;
  if (st === 'shutoff') throw new VmctlError('CONFLICT', `VM ${name} is not running`);
  await dom.shutdown();
  const timeoutMs = opts.timeoutMs ?? 120_000;
  op.waiting(`${name} to shut down (ACPI)`);
  const end = performance.now() + timeoutMs;
  while (performance.now() < end) {
    if ((await dom.state()).state === 'shutoff') return { forced: false };
    op.throwIfAborted();
    await sleep(500);
  }
  if (!opts.force) {
    throw new VmctlError('TIMEOUT', `VM ${name} did not shut down within ${Math.round(timeoutMs / 1000)} s after the ACPI request`, {
      hint: `retry with --force to power it off, or check vmctl console ${name}`,
    });
  }
  await dom.destroy();
  return { forced: true };
}

export async function rebootVm(op: OpContext, name: string): Promise<void> {
  await (await findVm(op.conn, name)).reboot();
}

export async function suspendVm(op: OpContext, name: string): Promise<void> {
  await (await findVm(op.conn, name)).suspend();
}

export async function resumeVm(op: OpContext, name: string): Promise<void> {
  await (await findVm(op.conn, name)).resume();
}

export async function destroyVm(op: OpContext, name: string): Promise<void> {
  const dom = await findVm(op.conn, name);
  if ((await dom.state()).state === 'shutoff') throw new VmctlError('CONFLICT', `VM ${name} is not running`);
  await dom.destroy();
}
