/**
 * What an interrupted migration left (vmctl killed, power cut): the journal
 * (`vmctlop:op` marker + `vmctlmig:migration`) on the domain, on the source,
 * the destination or both. libvirt has by then either completed the move or
 * rolled it back; this finds where the guest runs and finishes the job:
 * snapshots redefined there, markers cleared, a stale definition on the other
 * side removed (only ours: same UUID, inactive).
 */
import { VmctlError } from '../errors.js';
import { deleteVolumeAtIfThere, deleteVolumeIfThere } from '../storage/volume.js';
import { removePoolIfEmpty, VMCTL_POOL } from '../storage/pool.js';
import type { Connection, Domain } from '../../libvirt/connection.js';
import { clearMarker, markerLiveness, parseOpMarker } from '../op/journal.js';
import { lookupVm, undefineDomain } from '../vm/domain.js';
import { guestFacts } from './facts.js';
import { clearJournal, parseJournal, redefineSnapshots, type MigrationJournal } from './snapshots.js';

export interface Recovery {
  runsOn: 'source' | 'destination';
  uri: string;
  message: string;
}

/** source disk path → destination disk path, matched by target (vda, …) */
export function diskPathMap(srcXml: string, dstXml: string): Map<string, string> {
  const a = guestFacts(srcXml).disks;
  const b = new Map(guestFacts(dstXml).disks.map((d) => [d.target, d.path]));
  const m = new Map<string, string>();
  for (const d of a) {
    const to = b.get(d.target);
    if (d.path && to && to !== d.path) m.set(d.path, to);
  }
  return m;
}

async function stale(dom: Domain | undefined): Promise<{ dom: Domain; xml: string; journal: MigrationJournal | null; active: boolean } | undefined> {
  if (!dom) return undefined;
  const xml = await dom.xml();
  const m = parseOpMarker(xml);
  return { dom, xml, journal: m && m.op === 'migrate' && markerLiveness(m) !== 'alive' ? parseJournal(xml) : null, active: await dom.isActive() };
}

/** Finish or roll back what an interrupted `vmctl migrate` of `name` left; null when it left nothing. */
export async function recoverMigration(src: Connection, dst: Connection | undefined, name: string): Promise<Recovery | null> {
  const [s, d] = await Promise.all([lookupVm(src, name).then(stale), dst ? lookupVm(dst, name).then(stale) : undefined]);
  const journal = d?.journal ?? s?.journal;
  if (!journal) return null;
  if (s?.active && (await s.dom.jobStats()).type !== 'none') {
    throw new VmctlError('CONFLICT', `the migration of '${name}' that an interrupted vmctl started is still running in libvirt on ${src.uri.original}`, {
      hint: 'libvirt finishes or rolls it back on its own: run the command again in a moment',
    });
  }
  const sameGuest = s && d ? s.dom.uuidString === d.dom.uuidString : true;
  if (d && d.active && sameGuest) {
    const srcXml = journal.snapshots[0]?.xml ?? s?.xml ?? d.xml;
    await redefineSnapshots(d.dom, journal.snapshots, diskPathMap(srcXml, d.xml));
    await clearMarker(d.dom, true);
    await clearJournal(d.dom, true);
    let also = '';
    const staleSource = !s || !s.active;
    if (s && !s.active) {
      if (journal.keepSource) {
        await redefineSnapshots(s.dom, journal.snapshots);
        await clearMarker(s.dom);
        await clearJournal(s.dom, false);
        also = '; the source definition was kept (--keep-source)';
      } else {
        await undefineDomain(s.dom);
        also = '; its stale definition on the source was removed';
      }
    }
    // the source's copies of the moved volumes vmctl made for the VM (the guest lives on one host)
    if (staleSource && !journal.keepSource && journal.sourceCopies?.length) {
      let removed = 0;
      for (const path of journal.sourceCopies) if (await deleteVolumeAtIfThere(src, path)) removed++;
      if (removed > 0) also += `; the source's copies of its volumes were removed (${removed})`;
    }
    return { runsOn: 'destination', uri: dst!.uri.original, message: `the interrupted migration of '${name}' had completed: it runs on ${dst!.uri.original}; snapshots and markers set right${also}` };
  }
  if (s) {
    if (s.active && (await s.dom.state()).state === 'paused') await s.dom.resume().catch(() => undefined);
    await redefineSnapshots(s.dom, journal.snapshots);
    await clearMarker(s.dom, s.active);
    await clearJournal(s.dom, s.active);
    if (d && !d.active && sameGuest) await undefineDomain(d.dom);
    // the volumes it had made there for --copy-storage (no guest runs on them there)
    let gone = 0;
    if (dst && journal.made?.length && !(d && d.active)) {
      for (const v of journal.made) if (await deleteVolumeIfThere(dst, v.pool, v.name)) gone++;
    }
    // the pool it made there for them, while nothing else is in it
    const poolGone = dst && journal.makesPool && !(d && d.active) ? await removePoolIfEmpty(dst) : false;
    return {
      runsOn: 'source',
      uri: src.uri.original,
      message: `the interrupted migration of '${name}' was rolled back: it ${s.active ? 'runs' : 'is'} on ${src.uri.original}, unchanged; snapshots and markers restored${d && !d.active ? '; a leftover definition on the destination was removed' : ''}${gone > 0 ? `; the ${gone} volume(s) it had made there were removed` : ''}${poolGone ? `; so was the storage pool ${VMCTL_POOL} it had made there` : ''}`,
    };
  }
  return null;
}
