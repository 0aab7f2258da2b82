/**
 * A lab file made concrete for one prefix on one host: the libvirt names of
 * its networks and VMs, their addresses and MACs, the order VMs come up in,
 * and what each VM's create gets (template overrides, cloud-init additions).
 * Pure: nothing here talks to a host.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import { VmctlError } from '../errors.js';
import { VM_NAME_RE } from '../names.js';
import type { TemplateOverrides } from '../template/overrides.js';
import { instanceNames, intToIp, subnetRange, type LabSpec, type LabVmSpec } from './load.js';
import { LAB_PREFIX_RE } from './schema.js';

export interface PlannedLabNetwork {
  key: string;
  /** libvirt network name */
  name: string;
  uuid: string;
  mode: 'isolated' | 'nat';
  subnet: string;
  prefixLength: number;
  /** nat: the host's address on it (.1) */
  gateway?: string;
}

export interface PlannedLabNic {
  network: string;
  address: string;
  mac: string;
  /** eth1, eth2… in the guest */
  ifname: string;
}

export interface PlannedLabVm {
  key: string;
  /** the lab file's VM entry this instance comes from */
  entry: LabVmSpec;
  /** libvirt domain name */
  name: string;
  nics: PlannedLabNic[];
  /** instance keys this VM waits for */
  after: string[];
}

export interface LabPlan {
  id: string;
  lab: string;
  prefix: string;
  networks: PlannedLabNetwork[];
  vms: PlannedLabVm[];
  /** VM keys by start level: every VM of a level after all of the levels before */
  levels: string[][];
  memoryMiB: number;
}

/** The default prefix: the user's name, made a valid prefix. */
export function defaultPrefix(): string {
  let name = 'lab';
  try {
    name = userInfo().username;
  } catch {
    /* no passwd entry */
  }
  const p = name.toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^[^a-z]+/, '').slice(0, 16).replace(/-+$/, '');
  return p || 'lab';
}

export function assertPrefix(p: string): string {
  if (!LAB_PREFIX_RE.test(p)) {
    throw new VmctlError('INVALID_INPUT', `invalid lab prefix '${p.slice(0, 40)}'`, { hint: "lowercase letters, digits and '-', max 16, starting with a letter" });
  }
  return p;
}

export const labId = (prefix: string, lab: string): string => `${prefix}-${lab}`;
export const labNetworkName = (id: string, key: string): string => `vmctl-${id}-${key}`;
export const labVmName = (id: string, key: string): string => `${id}-${key}`;

/** a locally administered MAC in QEMU's 52:54:00 range */
export function randomMac(): string {
  const b = randomBytes(3);
  return `52:54:00:${[...b].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
}

/** memory of one VM entry in MiB, when the lab sets it (else the template's) */
export function planLab(spec: LabSpec, prefix: string, opts: { subnets?: ReadonlyMap<string, string>; memoryOf: (vm: LabVmSpec) => number }): LabPlan {
  const id = labId(assertPrefix(prefix), spec.name);
  const networks: PlannedLabNetwork[] = spec.networks.map((n) => {
    const subnet = opts.subnets?.get(n.name) ?? n.subnet;
    const { base, prefix: len } = subnetRange(subnet);
    return {
      key: n.name,
      name: labNetworkName(id, n.name),
      uuid: randomUUID(),
      mode: n.mode,
      subnet: `${intToIp(base)}/${len}`,
      prefixLength: len,
      ...(n.mode === 'nat' ? { gateway: intToIp(base + 1) } : {}),
    };
  });
  const byKey = new Map(networks.map((n) => [n.key, n]));
  // addresses: fixed ones first (moved with the subnet), then .10 upward
  const used = new Map<string, Set<number>>(networks.map((n) => [n.key, new Set<number>()]));
  const fixed = new Map<string, number>();
  for (const vm of spec.vms) {
    for (const e of vm.networks) {
      if (typeof e === 'string' || e.address === undefined) continue;
      const net = spec.networks.find((n) => n.name === e.network)!;
      const offset = subnetRange(`${e.address}/32`).base - subnetRange(net.subnet).base;
      used.get(e.network)!.add(offset);
      fixed.set(`${vm.name}\0${e.network}`, offset);
    }
  }
  const vms: PlannedLabVm[] = [];
  for (const entry of spec.vms) {
    for (const key of instanceNames(entry)) {
      const name = labVmName(id, key);
      if (!VM_NAME_RE.test(name)) throw new VmctlError('INVALID_INPUT', `lab VM name '${name}' is too long`, { hint: 'use a shorter --prefix' });
      const nics = entry.networks.map((e, j): PlannedLabNic => {
        const netKey = typeof e === 'string' ? e : e.network;
        const net = byKey.get(netKey)!;
        const { base, last } = subnetRange(net.subnet);
        let offset = fixed.get(`${entry.name}\0${netKey}`);
        if (offset === undefined) {
          offset = 10;
          while (used.get(netKey)!.has(offset)) offset++;
          if (base + offset >= last) throw new VmctlError('INVALID_INPUT', `lab network '${netKey}' (${net.subnet}) has no room for VM '${key}'`, { hint: 'use a larger subnet' });
          used.get(netKey)!.add(offset);
        }
        return { network: netKey, address: intToIp(base + offset), mac: randomMac(), ifname: `eth${j + 1}` };
      });
      vms.push({ key, entry, name, nics, after: spec.vms.filter((v) => entry.after.includes(v.name)).flatMap((v) => instanceNames(v)) });
    }
  }
  // start levels (the file has no cycles: load.ts checked)
  const levels: string[][] = [];
  const placed = new Set<string>();
  while (placed.size < vms.length) {
    const level = vms.filter((v) => !placed.has(v.key) && v.after.every((a) => placed.has(a))).map((v) => v.key);
    if (level.length === 0) throw new VmctlError('INTERNAL', 'lab start order has a cycle');
    level.forEach((k) => placed.add(k));
    levels.push(level);
  }
  const memoryMiB = spec.vms.reduce((a, v) => a + opts.memoryOf(v) * v.count, 0);
  return { id, lab: spec.name, prefix, networks, vms, levels, memoryMiB };
}

/** The libvirt network XML object of a lab network (built with the XML library by the caller). */
export function labNetworkXmlObject(n: PlannedLabNetwork): Record<string, unknown> {
  return {
    network: {
      name: n.name,
      uuid: n.uuid,
      ...(n.mode === 'nat' ? { forward: { '@_mode': 'nat' } } : {}),
      // no bridge name: libvirt picks a free virbrN
      bridge: { '@_stp': 'on', '@_delay': '0' },
      // isolated: no <ip> — the host has no address on it and no dnsmasq runs; guests have static addresses
      ...(n.gateway ? { ip: { '@_address': n.gateway, '@_prefix': String(n.prefixLength) } } : {}),
    },
  };
}

/** What the VM's create gets: template overrides and cloud-init additions. */
export function labVmCreateInput(plan: LabPlan, vm: PlannedLabVm): {
  overrides: TemplateOverrides;
  extraUserData: Record<string, unknown>;
  extraNetworkConfig: Record<string, unknown>;
  hostname: string;
} {
  const e = vm.entry;
  const netName = new Map(plan.networks.map((n) => [n.key, n]));
  const overrides: TemplateOverrides = {
    ...(e.cpus !== undefined ? { cpus: e.cpus } : {}),
    ...(e.memory !== undefined ? { memory: e.memory } : {}),
    ...(e.diskSize !== undefined ? { diskSize: e.diskSize } : {}),
    ...(e.image !== undefined ? { image: e.image } : {}),
    ...(vm.nics.length > 0 ? { extraNics: vm.nics.map((n) => ({ network: netName.get(n.network)!.name, mac: n.mac })) } : {}),
    ...(e.nicModel !== undefined ? { nicModel: e.nicModel } : {}),
    ...(e.diskBus !== undefined ? { diskBus: e.diskBus } : {}),
    ...(e.onCrash !== undefined ? { onCrash: e.onCrash } : {}),
    ...(e.watchdog !== undefined ? { watchdog: e.watchdog } : {}),
  };
  // /etc/hosts: this VM, and the lab's VMs on the networks it shares with them
  const mine = new Set(vm.nics.map((n) => n.network));
  const peers = plan.vms.flatMap((o) => (o.key === vm.key ? [] : o.nics.filter((n) => mine.has(n.network)).map((n) => `${n.address} ${o.key}`)));
  const hosts = [
    '127.0.0.1 localhost',
    `127.0.1.1 ${vm.key}`,
    '::1 localhost ip6-localhost ip6-loopback',
    `# vmctl lab ${plan.id}`,
    ...vm.nics.map((n) => `${n.address} ${vm.key}-${n.network}`),
    ...peers,
    '',
  ].join('\n');
  const files = [
    { path: '/etc/hosts', content: hosts, permissions: '0644' },
    ...e.cloudInit.files.map((f) => ({ path: f.path, content: f.content, permissions: f.mode })),
  ];
  const extraUserData: Record<string, unknown> = {
    manage_etc_hosts: false,
    write_files: files,
    ...(e.cloudInit.packages.length > 0 ? { packages: e.cloudInit.packages } : {}),
    ...(e.cloudInit.runcmd.length > 0 ? { runcmd: e.cloudInit.runcmd } : {}),
  };
  const ethernets: Record<string, unknown> = {};
  for (const n of vm.nics) {
    const net = netName.get(n.network)!;
    ethernets[n.ifname] = { match: { macaddress: n.mac }, 'set-name': n.ifname, dhcp4: false, dhcp6: false, addresses: [`${n.address}/${net.prefixLength}`] };
  }
  return { overrides, extraUserData, extraNetworkConfig: vm.nics.length > 0 ? { ethernets } : {}, hostname: vm.key };
}
