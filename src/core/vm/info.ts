/** `vmctl info`, and how to reach a VM over SSH from this machine. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VmctlError } from '../errors.js';
import { vmStateDir } from '../paths.js';
import { xmlParser } from '../xml.js';
import type { Connection, DomainStateName } from '../../libvirt/connection.js';
import { hostPatternFor } from '../guest/cloudinit.js';
import type { GuestTarget } from '../guest/ssh.js';
import { parseOpMarker } from '../op/journal.js';
import { parseVmctlMetadata, type VmctlDomainMetadata } from './domain-xml.js';
import { findVm, describeMarker } from './domain.js';
import { isSshForward, tunnelFor } from './forward.js';
import { guestAddresses } from './readiness.js';

export interface VmInfo {
  name: string;
  uuid: string;
  state: DomainStateName;
  domainType: string;
  accel: 'kvm' | 'tcg' | string;
  vcpus: number;
  memoryMiB: number;
  disks: { target: string; source?: string; device: string }[];
  ips: string[];
  ipSource?: string;
  ssh?: { host: string; port: number; user: string };
  template?: string;
  image?: string;
  createdByVmctl: boolean;
  /** set when an interrupted command left the VM incomplete */
  incomplete?: string;
}

export async function vmInfo(conn: Connection, name: string): Promise<VmInfo> {
  const dom = await findVm(conn, name);
  const [info, xml, st] = await Promise.all([dom.info(), dom.xml(), dom.state()]);
  const meta = parseVmctlMetadata(xml);
  const marker = parseOpMarker(xml);
  const doc = xmlParser.parse(xml) as { domain: { '@_type': string; devices?: { disk?: unknown } } };
  const rawDisks = doc.domain.devices?.disk;
  const disks = (Array.isArray(rawDisks) ? rawDisks : rawDisks ? [rawDisks] : []).map((d: Record<string, unknown>) => {
    const src = d.source as Record<string, string> | undefined;
    const tgt = d.target as Record<string, string> | undefined;
    return { target: tgt?.['@_dev'] ?? '?', device: String(d['@_device'] ?? 'disk'), ...(src?.['@_file'] ? { source: src['@_file'] } : {}) };
  });
  let ips: string[] = [];
  let ipSource: string | undefined;
  if (st.state === 'running') {
    const a = await guestAddresses(dom);
    if (a) {
      ips = a.addrs;
      ipSource = a.source;
    }
  }
  const fwd = meta?.forwards.find(isSshForward);
  return {
    name: dom.name,
    uuid: dom.uuidString,
    state: st.state,
    domainType: doc.domain['@_type'],
    accel: doc.domain['@_type'] === 'kvm' ? 'kvm' : 'tcg',
    vcpus: info.nrVirtCpu,
    memoryMiB: Math.round(Number(info.maxMem) / 1024),
    disks,
    ips,
    ...(ipSource ? { ipSource } : {}),
    ...(fwd ? { ssh: { host: fwd.host, port: fwd.hostPort, user: meta?.sshUser ?? 'vmctl' } } : {}),
    ...(meta?.template ? { template: meta.template } : {}),
    ...(meta?.image ? { image: meta.image } : {}),
    createdByVmctl: meta !== null,
    ...(marker ? { incomplete: describeMarker(marker) } : {}),
  };
}

/** How to reach a VM over SSH from this machine (its forward + pinned host key). */
export async function vmSshTarget(conn: Connection, name: string, opts: { running?: boolean } = {}): Promise<GuestTarget> {
  const dom = await findVm(conn, name);
  const meta: VmctlDomainMetadata | null = parseVmctlMetadata(await dom.xml());
  const fwd = meta?.forwards.find(isSshForward);
  if (!meta || !fwd) {
    throw new VmctlError('UNSUPPORTED', `VM ${name} has no SSH forward recorded by vmctl`, { hint: 'vmctl ssh works with VMs made by vmctl create' });
  }
  if (opts.running !== false && (await dom.state()).state !== 'running') {
    throw new VmctlError('CONFLICT', `VM ${name} is not running`, { hint: `vmctl start ${name}` });
  }
  const stateDir = vmStateDir(conn.uri.original, name);
  const keyFile = join(stateDir, 'id_ed25519');
  const knownHostsFile = join(stateDir, 'known_hosts');
  if (!existsSync(knownHostsFile)) {
    throw new VmctlError('HOST_KEY', `no pinned host key for ${name} on this machine (${knownHostsFile} is missing)`, {
      hint: 'vmctl ssh works from the machine and user that created the VM',
    });
  }
  return {
    host: fwd.host,
    port: fwd.hostPort,
    user: meta.sshUser ?? 'vmctl',
    knownHostsFile,
    hostPattern: hostPatternFor(fwd.host, fwd.hostPort),
    ...(existsSync(keyFile) ? { privateKey: readFileSync(keyFile, 'utf8') } : {}),
    ...(process.env.SSH_AUTH_SOCK ? { agent: process.env.SSH_AUTH_SOCK } : {}),
    ...tunnelFor(conn),
  };
}
