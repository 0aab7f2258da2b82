/**
 * What interrupted operations left on a host: VMs carrying an intent marker
 * (incomplete) and leases whose holder is gone. `vmctl host check` reports
 * them with the command that clears each.
 */
import type { Connection } from '../../libvirt/connection.js';
import { parseOpMarker, markerLiveness, type OpMarker } from './journal.js';
import { listLeases, type LeaseInfo } from './lease.js';

export interface InterruptedOps {
  vms: { name: string; marker: OpMarker; running: 'alive' | 'dead' | 'unknown' }[];
  staleLeases: LeaseInfo[];
}

export async function interruptedOperations(conn: Connection): Promise<InterruptedOps> {
  const doms = await conn.listDomains({ active: true, inactive: true });
  const xmls = await Promise.all(doms.map((d) => d.xml()));
  const vms = doms.flatMap((d, i) => {
    const marker = parseOpMarker(xmls[i]!);
    return marker ? [{ name: d.name, marker, running: markerLiveness(marker) }] : [];
  });
  const staleLeases = (await listLeases(conn)).filter((l) => l.state === 'stale');
  return { vms, staleLeases };
}
