/** `vmctl lab list` and `lab status`: what the records say, and what the host has of it. */
import { VmctlError } from '../errors.js';
import type { Connection } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { lookupVm } from '../vm/domain.js';
import { vmSshTarget } from '../vm/info.js';
import { findOnPeers, listLabRecords, mustReadLabRecord, recordLiveness, type LabRecord } from './record.js';

export interface LabSummary {
  id: string;
  lab: string;
  prefix: string;
  state: LabRecord['state'] | 'interrupted';
  vms: number;
  networks: number;
  snapshots: string[];
  file: string;
  createdAt: string;
}

const stateOf = (r: LabRecord): LabSummary['state'] => (r.state !== 'ready' && recordLiveness(r) === 'dead' ? 'interrupted' : r.state);

const summary = (r: LabRecord): LabSummary => ({
  id: r.id,
  lab: r.lab,
  prefix: r.prefix,
  state: stateOf(r),
  vms: r.vms.length,
  networks: r.networks.length,
  snapshots: r.snapshots.map((s) => s.name),
  file: r.file,
  createdAt: r.createdAt,
});

export async function listLabs(conn: Connection): Promise<LabSummary[]> {
  return (await listLabRecords(conn)).map(summary);
}

export interface LabStatus extends LabSummary {
  trusted: boolean;
  peers: Record<string, string>;
  /** state 'missing' when neither this host nor a peer has it; `peer` when it runs on one of the lab's peers (migrated) */
  vmStates: { key: string; name: string; state: string; peer?: string; ssh?: { host: string; port: number; user: string } }[];
  networkStates: { key: string; name: string; subnet: string; mode: string; active: boolean | 'missing' }[];
}

/** `open`: a connection to one of the lab's peers (to find VMs migrated there by their UUID); unreachable peers are skipped. */
export async function labStatus(conn: Connection, id: string, open?: (uri: string) => Promise<Connection>): Promise<LabStatus> {
  const found = await mustReadLabRecord(conn, id);
  const r = found.record;
  const peers = new Map<string, Promise<Connection | undefined>>();
  const peer = (uri: string) => {
    if (!peers.has(uri)) peers.set(uri, open ? open(uri).catch(() => undefined) : Promise.resolve(undefined));
    return peers.get(uri)!;
  };
  const onPeer = async (v: LabRecord['vms'][number]) => {
    const there = await findOnPeers(r, v, (_name, uri) => peer(uri));
    return there ? { key: v.key, name: v.name, state: (await there.dom.state()).state, peer: there.peer } : undefined;
  };
  const vmStates = await Promise.all(
    r.vms.map(async (v) => {
      const dom = await lookupVm(conn, v.name);
      if (!dom || dom.uuidString !== v.uuid) return (!dom && (await onPeer(v))) || { key: v.key, name: v.name, state: 'missing' };
      const state = (await dom.state()).state;
      const ssh = await vmSshTarget(conn, v.name, { running: false }).then(
        (t) => ({ host: t.host, port: t.port, user: t.user }),
        () => undefined,
      );
      return { key: v.key, name: v.name, state, ...(ssh ? { ssh } : {}) };
    }),
  );
  const networkStates = await Promise.all(
    r.networks.map(async (n) => {
      try {
        const net = await conn.lookupNetwork(n.name);
        return { key: n.key, name: n.name, subnet: n.subnet, mode: n.mode, active: net.uuidString === n.uuid ? await net.isActive() : ('missing' as const) };
      } catch (e) {
        if (e instanceof LibvirtError && e.isNotFound()) return { key: n.key, name: n.name, subnet: n.subnet, mode: n.mode, active: 'missing' as const };
        throw e;
      }
    }),
  );
  await Promise.all([...peers.values()].map(async (c) => (await c)?.close().catch(() => undefined)));
  return {
    ...summary(r),
    trusted: r.trusted,
    peers: r.peers,
    vmStates,
    networkStates,
  };
}

/** The libvirt name of lab VM `key`. */
export async function labVmName(conn: Connection, id: string, key: string): Promise<string> {
  const found = await mustReadLabRecord(conn, id);
  const v = found.record.vms.find((x) => x.key === key);
  if (!v) throw new VmctlError('NOT_FOUND', `lab ${id} has no VM '${key}'`, { hint: `its VMs: ${found.record.vms.map((x) => x.key).join(', ')}` });
  return v.name;
}
