/** The VM model as vmctl shows it, built from libvirt domains. */
import type { Connection, Domain } from '../../libvirt/connection.js';
import { domainStateName, type DomainStateName } from '../../libvirt/connection.js';
import { parseOpMarker } from '../op/journal.js';
import { holderLiveness } from '../op/holder.js';

export interface VmSummary {
  name: string;
  uuid: string;
  /** libvirt's runtime id; null when not running */
  id: number | null;
  state: DomainStateName;
  vcpus: number;
  memoryKiB: number;
  maxMemoryKiB: number;
  persistent: boolean;
  /** left incomplete by an interrupted vmctl command (or one still running): which, where it stopped */
  incomplete?: { op: string; step: string; since: string; holder: string; running: 'yes' | 'no' | 'unknown' };
}

export async function summarize(dom: Domain): Promise<VmSummary> {
  const [info, persistent, xml] = await Promise.all([dom.info(), dom.isPersistent(), dom.xml()]);
  const m = parseOpMarker(xml);
  const life = m ? holderLiveness(m) : 'unknown';
  return {
    name: dom.name,
    uuid: dom.uuidString,
    id: dom.id >= 0 ? dom.id : null,
    state: domainStateName(info.state),
    vcpus: info.nrVirtCpu,
    memoryKiB: Number(info.memory),
    maxMemoryKiB: Number(info.maxMem),
    persistent,
    ...(m ? { incomplete: { op: m.op, step: m.step, since: m.since, holder: `${m.user}@${m.host} pid ${m.pid}`, running: life === 'alive' ? 'yes' : life === 'dead' ? 'no' : 'unknown' } } : {}),
  };
}

export async function listVms(conn: Connection, opts: { all: boolean }): Promise<VmSummary[]> {
  const doms = await conn.listDomains({ inactive: true });
  // incomplete VMs are always shown: they need the user's attention
  const vms = (await Promise.all(doms.map((d) => summarize(d)))).filter((v) => opts.all || v.id !== null || v.incomplete);
  // running first by id, then stopped by name, like virsh
  return vms.sort((a, b) => (a.id ?? Infinity) - (b.id ?? Infinity) || a.name.localeCompare(b.name));
}
