/**
 * What interrupted operations left on a host: VMs carrying an intent marker
 * (incomplete) and leases whose holder is gone. `vmctl host check` reports
 * them with the command that clears each.
 */
import type { Connection } from '../../libvirt/connection.js';
import type { CheckResult } from '../host/check.js';
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

/** VMs left incomplete by interrupted commands, and leases of processes that are gone. */
export function checkInterrupted(found: InterruptedOps): CheckResult {
  const base = { id: 'interrupted', check: 'interrupted operations' };
  const vms = found.vms.filter((v) => v.running !== 'alive');
  const busy = found.vms.filter((v) => v.running === 'alive');
  if (vms.length === 0 && found.staleLeases.length === 0) {
    return { ...base, status: 'PASS', finding: busy.length ? `none (${busy.map((v) => `${v.name}: vmctl ${v.marker.op} running`).join(', ')})` : 'none' };
  }
  const parts = [
    ...vms.map((v) => `${v.name}: vmctl ${v.marker.op} by ${v.marker.user}@${v.marker.host} pid ${v.marker.pid} stopped at '${v.marker.step}' (${v.marker.since})`),
    ...found.staleLeases.map((l) => `lock on ${l.resource} of a process that is gone${l.record ? ` (vmctl ${l.record.op}, pid ${l.record.pid})` : ''}`),
  ];
  return {
    ...base,
    status: 'WARN',
    finding: parts.join('; '),
    fix: vms.length
      ? vms.map((v) => `vmctl delete ${v.name}`).join('; ')
      : 'nothing to do: the next vmctl command on that VM takes a stale lock over (of a VM that is gone, vmctl delete NAME removes it)',
    data: { vms: found.vms.map((v) => ({ name: v.name, ...v.marker, running: v.running })), staleLeases: found.staleLeases },
  };
}
