/**
 * Finishing what an interrupted snapshot command left (kill -9, a power cut):
 * the next snapshot command on the VM, holding its lease, finds the intent
 * marker of a command whose process is gone and
 *   1. aborts any block job on the VM's disks (an unfinished merge: no pivot),
 *   2. removes files vmctl recorded but nothing uses — not on a disk's active
 *      chain, no snapshot's overlay, layer or memory image (a snapshot libvirt
 *      never made, overlays of a revert that never switched),
 *   3. clears the marker.
 * The guest's definition and every snapshot libvirt knows stay as they are.
 */
import { VmctlError } from '../errors.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Domain } from '../../libvirt/connection.js';
import { VirDomainXMLFlags } from '../../libvirt/generated/constants.gen.js';
import type { OpContext } from '../op/context.js';
import { clearMarker, markerLiveness, parseOpMarker } from '../op/journal.js';
import { describeMarker, incompleteError } from '../vm/domain.js';
import { parseSnapshotFiles, writeSnapshotFiles } from './model.js';
import { backingChain, domainDisks } from './disks.js';
import { listSnapshotInfos } from './list.js';
import { refreshPools } from './pools.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Before a snapshot command: refuse a VM another command left incomplete, or clean up after an interrupted snapshot command. */
export async function settleSnapshotState(op: OpContext, dom: Domain, liveXml?: string): Promise<{ recovered?: string }> {
  const xml = liveXml ?? (await dom.xml());
  const marker = parseOpMarker(xml);
  if (!marker) return {};
  if (!marker.op.startsWith('snapshot')) throw incompleteError(dom.name, marker, xml);
  // we hold the VM's lease: the marker's command is not running any more, unless it runs elsewhere
  // without a lease (it cannot: every snapshot command takes it)
  if (markerLiveness(marker) === 'alive') throw new VmctlError('CONFLICT', `VM ${dom.name} is busy: ${describeMarker(marker)}`, { hint: 'wait for it to finish' });
  const running = (await dom.state()).state !== 'shutoff';
  const live = await dom.xml();
  const disks = domainDisks(live).filter((d) => d.device === 'disk' && d.source);
  // 1. no block job outlives its command
  for (const d of disks) {
    if (!running) break;
    if (await dom.blockJobInfo(d.target)) {
      await dom.abortBlockJob(d.target);
      for (let i = 0; i < 300 && (await dom.blockJobInfo(d.target)); i++) await sleep(100);
    }
  }
  // 2. recorded files nothing uses
  await refreshPools(op);
  const used = new Set<string>();
  for (const d of disks) for (const p of await backingChain(op.conn, d.source!)) used.add(p);
  for (const s of await listSnapshotInfos(dom)) {
    for (const d of s.disks) for (const p of [d.overlay, d.base]) if (p) used.add(p);
    if (s.memoryFile) used.add(s.memoryFile);
  }
  const recorded = parseSnapshotFiles(await dom.xml(VirDomainXMLFlags.VIR_DOMAIN_XML_INACTIVE));
  const unused = recorded.filter((f) => !used.has(f.path));
  for (const f of unused) {
    try {
      await (await op.conn.lookupStorageVolumeByPath(f.path)).delete();
    } catch (e) {
      if (!(e instanceof LibvirtError && e.isNotFound())) throw e;
    }
  }
  if (unused.length) await writeSnapshotFiles(dom, recorded.filter((f) => used.has(f.path)), running);
  // a delete that started the stopped VM paused for its merge: stop it again
  let stopped = false;
  if (marker.step === 'merge-paused' && (await dom.state()).state === 'paused') {
    await dom.destroy();
    stopped = true;
  }
  await clearMarker(dom, running && !stopped);
  const what = `finished after an interrupted vmctl ${marker.op} (step '${marker.step}'): ${unused.length ? `removed ${unused.map((f) => f.path).join(', ')}` : 'nothing to remove'}`;
  op.notice(what);
  return { recovered: what };
}
