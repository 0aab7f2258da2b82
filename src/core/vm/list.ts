/** The VM model as vmctl shows it, built from libvirt domains. */
import type { Connection, Domain } from '../../libvirt/connection.js';
import { domainStateName, type DomainStateName } from '../../libvirt/connection.js';

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
}

export async function summarize(dom: Domain): Promise<VmSummary> {
  const [info, persistent] = await Promise.all([dom.info(), dom.isPersistent()]);
  return {
    name: dom.name,
    uuid: dom.uuidString,
    id: dom.id >= 0 ? dom.id : null,
    state: domainStateName(info.state),
    vcpus: info.nrVirtCpu,
    memoryKiB: Number(info.memory),
    maxMemoryKiB: Number(info.maxMem),
    persistent,
  };
}

export async function listVms(conn: Connection, opts: { all: boolean }): Promise<VmSummary[]> {
  const doms = await conn.listDomains({ inactive: opts.all });
  const vms = await Promise.all(doms.map((d) => summarize(d)));
  // running first by id, then stopped by name, like virsh
  return vms.sort((a, b) => (a.id ?? Infinity) - (b.id ?? Infinity) || a.name.localeCompare(b.name));
}
