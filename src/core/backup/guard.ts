/**
 * A pull-mode backup job never ends by itself: QEMU keeps the export (and its scratch image, which
 * grows as the guest writes) until someone aborts the job. So that kill -9 of `vmctl backup` does
 * not leave one running until the next backup of the VM, the CLI starts a small guard process
 * beside it (detached, its stdin a pipe from vmctl): told 'done', it exits; when the pipe closes
 * without that (vmctl died), it waits for the holder to be gone and removes what the journal record
 * names (recoverInterrupted: the job, the checkpoint, scratch volumes, socket, partial point).
 */
import type { OpContext } from '../op/context.js';
import { jobLiveness, parseJobRecord } from './journal.js';
import { recoverInterrupted } from './take.js';

export interface JobGuard {
  /** the backup finished (or undid itself): the guard exits without doing anything */
  release(): void;
}

/** How core asks for a guard (the CLI spawns one; library use may pass none: the next backup recovers). */
export type StartJobGuard = (g: { uri: string; vm: string; opId: string }) => JobGuard;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The guard's work once vmctl is gone: if the VM still carries operation `opId`'s record, wait until
 * its holder process has exited (up to 10 s), then recover. Returns what was removed, or undefined.
 */
export async function reapInterruptedBackup(op: OpContext, vm: string, opId: string): Promise<string | undefined> {
  const dom = await op.conn.lookupDomain(vm);
  let rec = parseJobRecord(await dom.xml());
  for (let i = 0; i < 100 && rec?.opId === opId && jobLiveness(rec) === 'alive'; i++) {
    await sleep(100);
    rec = parseJobRecord(await dom.xml());
  }
  if (!rec || rec.opId !== opId || jobLiveness(rec) === 'alive') return undefined;
  await op.lease(`vm/${vm}`, `VM '${vm}'`);
  return recoverInterrupted(op, dom, (await dom.state()).state !== 'shutoff');
}
