/**
 * `vmctl lab up`: networks, then the VMs side by side (level by level of the
 * start order), each to SSH-ready and cloud-init done (as `vmctl create` waits),
 * then a baseline snapshot of every VM. All or nothing: the lab's record is
 * written on the host before anything is made and moved along as things are
 * made; a failure or Ctrl-C undoes everything (the operation's undo stack),
 * and after kill -9 the record names exactly what `lab down` (or the next
 * `lab up`) removes. Running it again on a lab that is up changes nothing.
 */
import { VmctlError } from '../errors.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Connection } from '../../libvirt/connection.js';
import type { OpContext } from '../op/context.js';
import { xmlBuilder, xmlParser } from '../xml.js';
import { loadTemplate } from '../template/load.js';
import { ensureImage } from '../image/images.js';
import { applyCreate, planCreate, type CreatePlan } from '../vm/create.js';
import { forwardPortCandidates } from '../vm/forward.js';
import { lookupVm } from '../vm/domain.js';
import { deleteVm } from '../vm/remove.js';
import { createSnapshot } from '../snapshot/create.js';
import { markerLiveness, parseOpMarker } from '../op/journal.js';
import { vmSshTarget } from '../vm/info.js';
import type { AccelRequest } from '../host/accel.js';
import { intToIp, loadLab, sizeMiB, subnetRange, type LabSpec } from './load.js';
import { labNetworkXmlObject, labVmCreateInput, planLab, type LabPlan } from './plan.js';
import { findOnPeers, opStamp, readLabRecord, recordLiveness, removeLabRecord, writeLabRecord, type LabRecord } from './record.js';
import { teardownLab } from './down.js';
import { takeLabSnapshot } from './snapshot.js';

export const BASELINE = 'baseline';

export interface LabUpOptions {
  lab: string;
  prefix: string;
  trust?: boolean;
  peers?: Record<string, string>;
  accel?: AccelRequest;
  timeoutMs?: number;
}

export interface LabUpResult {
  id: string;
  lab: string;
  /** the lab was up already: nothing changed */
  unchanged: boolean;
  /** an interrupted earlier lab up/down was cleaned up first */
  recovered?: boolean;
  /** the lab was up, but these VMs were gone: made again from the lab file */
  replaced?: string[];
  vms: { key: string; name: string; ssh?: { host: string; port: number; user: string }; addresses: Record<string, string> }[];
  networks: { key: string; name: string; subnet: string; mode: string }[];
  hostCommands: number;
  trusted: boolean;
  tookMs: number;
}

/** host-side commands of a lab (checks and solution steps): listed before `--trust` is honoured */
export function hostCommands(spec: LabSpec): { exercise: string; kind: 'check' | 'solution'; run: string }[] {
  return spec.exercises.flatMap((ex) => [
    ...ex.checks.filter((c) => c.on === 'host').map((c) => ({ exercise: ex.id, kind: 'check' as const, run: c.run })),
    ...ex.solution.filter((s) => s.on === 'host').map((s) => ({ exercise: ex.id, kind: 'solution' as const, run: s.run })),
  ]);
}

const notFound = (e: unknown) => e instanceof LibvirtError && e.isNotFound();

/** subnets of the host's other networks (a NAT lab network must not overlap them) */
async function takenSubnets(conn: Connection, except: Set<string>): Promise<{ base: number; last: number; name: string }[]> {
  const out: { base: number; last: number; name: string }[] = [];
  for (const n of await conn.listNetworks()) {
    if (except.has(n.name)) continue;
    const doc = xmlParser.parse(await n.xml().catch(() => '')) as { network?: { ip?: unknown } };
    const ips = doc.network?.ip === undefined ? [] : Array.isArray(doc.network.ip) ? doc.network.ip : [doc.network.ip];
    for (const ip of ips as Record<string, string>[]) {
      const addr = ip['@_address'];
      const prefix = ip['@_prefix'] ?? (ip['@_netmask'] ? String(ip['@_netmask'].split('.').reduce((a, o) => a + Number(o).toString(2).replace(/0/g, '').length, 0)) : undefined);
      if (addr && prefix && /^\d+\.\d+\.\d+\.\d+$/.test(addr)) out.push({ ...subnetRange(`${addr}/${prefix}`), name: n.name });
    }
  }
  return out;
}

/** NAT networks get a free subnet of the same size if theirs is taken (two prefixes of one lab, or another network). */
async function pickSubnets(conn: Connection, spec: LabSpec, ownNames: Set<string>): Promise<Map<string, string>> {
  const taken = await takenSubnets(conn, ownNames);
  const out = new Map<string, string>();
  for (const n of spec.networks) {
    if (n.mode !== 'nat') continue;
    const { base, prefix } = subnetRange(n.subnet);
    const size = 2 ** (32 - prefix);
    let b = base;
    for (let i = 0; i < 4096; i++, b += size) {
      const last = b + size - 1;
      if (!taken.some((t) => !(last < t.base || b > t.last))) break;
    }
    const cidr = `${[24, 16, 8, 0].map((s) => Math.floor(b / 2 ** s) % 256).join('.')}/${prefix}`;
    out.set(n.name, cidr);
    taken.push({ base: b, last: b + size - 1, name: n.name });
  }
  return out;
}

/**
 * What of a lab that is up is still there. `broken`: what lab up cannot mend (a network gone, or
 * a VM of the lab's name that is not the lab's); `missing`: VMs that are gone (lab up makes them
 * again); `moved`: VMs found by their UUID on one of the lab's peers (migrated there).
 */
async function labIsWhole(op: OpContext, r: LabRecord): Promise<{ broken?: string; missing: string[]; moved: string[] }> {
  const conn = op.conn;
  for (const n of r.networks) {
    try {
      const net = await conn.lookupNetwork(n.name);
      if (net.uuidString !== n.uuid) return { broken: `network ${n.name} is not the one the lab made`, missing: [], moved: [] };
      if (!(await net.isActive())) await net.start();
    } catch (e) {
      if (notFound(e)) return { broken: `network ${n.name} is missing`, missing: [], moved: [] };
      throw e;
    }
  }
  const missing: string[] = [];
  const moved: string[] = [];
  for (const v of r.vms) {
    const dom = await lookupVm(conn, v.name);
    if (dom && dom.uuidString !== v.uuid) {
      return { broken: `VM ${v.name} is not the one the lab made (vmctl delete ${v.name} if it is yours to remove; lab up then makes the lab's again)`, missing: [], moved: [] };
    }
    if (dom) {
      // a replacement that kill -9 stopped half-way: removed, and made again
      const m = parseOpMarker(await dom.xml());
      if (m && m.op === 'create' && markerLiveness(m) === 'dead') {
        await deleteVm(op.scoped(v.key), v.name);
        missing.push(v.key);
      }
      continue;
    }
    const there = await findOnPeers(r, v, (_peer, uri) => op.connection(uri).catch(() => undefined));
    (there ? moved : missing).push(v.key);
  }
  return { missing, moved };
}

/** `vmctl create`'s plan for one VM of the lab (validated, nothing made). */
function planLabVm(op: OpContext, plan: LabPlan, vm: LabPlan['vms'][number], o: { accel?: AccelRequest; timeoutMs?: number; candidates: ReturnType<typeof forwardPortCandidates> }): Promise<CreatePlan> {
  const input = labVmCreateInput(plan, vm);
  return planCreate(op, {
    name: vm.name,
    template: vm.entry.template,
    overrides: input.overrides,
    extraUserData: input.extraUserData,
    extraNetworkConfig: input.extraNetworkConfig,
    hostname: input.hostname,
    ...(vm.entry.autostart !== undefined ? { autostart: vm.entry.autostart } : {}),
    ...(o.accel ? { accel: o.accel } : {}),
    portCandidates: o.candidates,
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
  });
}

/**
 * Make the lab's VMs `keys` again, from the lab file, exactly as lab up makes them (same name,
 * networks, addresses, cloud-init). The record names each new VM (by its UUID) before it is made,
 * so kill -9 leaves nothing lab down does not find. A replaced VM gets the baseline snapshot (its
 * state as lab up leaves it); other lab snapshots were taken without it, and say so.
 */
async function repairLab(
  op: OpContext,
  o: { spec: LabSpec; prefix: string; record: LabRecord; keys: string[]; memoryOf: (vm: LabSpec['vms'][number]) => number; accel?: AccelRequest; timeoutMs?: number },
): Promise<LabRecord> {
  const conn = op.conn;
  const plan = planLab(o.spec, o.prefix, { memoryOf: o.memoryOf, subnets: new Map(o.record.networks.map((n) => [n.key, n.subnet])) });
  const candidates = forwardPortCandidates();
  let record = o.record;
  const found = await readLabRecord(conn, record.id);
  for (const key of o.keys) {
    const vm = plan.vms.find((v) => v.key === key);
    if (!vm) throw new VmctlError('CONFLICT', `lab ${record.id}: VM ${key} is no longer in the lab file`, { hint: `vmctl lab down ${record.lab} --prefix ${o.prefix}, then lab up` });
    const vop = op.scoped(key);
    // the same shape as lab up gave it (1 vCPU under TCG when the lab asked for more than the host has)
    const cp = await planLabVm(vop, plan, record.oneCpu?.includes(key) && vm.entry.cpus === undefined ? { ...vm, entry: { ...vm.entry, cpus: 1 } } : vm, { ...o, candidates });
    op.notice(`lab ${record.id}: VM ${key} is gone; making it again from the lab file`);
    record = {
      ...record,
      vms: record.vms.map((v) => (v.key === key ? { ...v, uuid: cp.uuid } : v)),
      snapshots: record.snapshots.map((s) => (s.name === BASELINE ? s : { ...s, lacks: [...new Set([...(s.lacks ?? []), key])] })),
      op: opStamp('lab-up', op.id),
    };
    await writeLabRecord(conn, record, found?.secret.uuidString);
    await applyCreate(vop, cp);
    if (record.snapshots.some((s) => s.name === BASELINE)) {
      const sub = op.scoped(key, { ownUndo: true });
      await createSnapshot(sub, vm.name, { name: BASELINE, description: `lab ${record.id} snapshot ${BASELINE} (VM replaced)` });
      sub.undo.commit();
    }
    op.phase('replaced', key);
  }
  return record;
}

const net0 = (conn: Connection, name: string) => conn.lookupNetwork(name);

/** Move lab network `key` to `subnet`: its gateway and every VM address on it keep their offsets. */
function moveSubnet(plan: LabPlan, key: string, subnet: string): void {
  const n = plan.networks.find((x) => x.key === key)!;
  const from = subnetRange(n.subnet).base;
  const to = subnetRange(subnet).base;
  const shift = (ip: string) => intToIp(subnetRange(`${ip}/32`).base - from + to);
  n.subnet = subnet;
  if (n.gateway) n.gateway = shift(n.gateway);
  for (const vm of plan.vms) for (const nic of vm.nics) if (nic.network === key) nic.address = shift(nic.address);
}

function result(plan: Pick<LabPlan, 'id' | 'lab'>, r: LabRecord, extra: Partial<LabUpResult> & { tookMs: number; hostCommands: number }, vms: LabUpResult['vms']): LabUpResult {
  return {
    id: plan.id,
    lab: plan.lab,
    unchanged: false,
    vms,
    networks: r.networks.map((n) => ({ key: n.key, name: n.name, subnet: n.subnet, mode: n.mode })),
    trusted: r.trusted,
    ...extra,
  };
}

export async function labUp(op: OpContext, opts: LabUpOptions): Promise<LabUpResult> {
  const loaded = loadLab(opts.lab);
  const spec = loaded.spec;
  const conn = op.conn;
  const peers = opts.peers ?? {};
  for (const p of spec.peers) {
    if (!peers[p.name]) {
      throw new VmctlError('INVALID_INPUT', `lab ${spec.name} needs a second host '${p.name}'`, { hint: `give it with --peer ${p.name}=URI (e.g. qemu+ssh://root@host2/system)` });
    }
  }
  const unknownPeer = Object.keys(peers).find((k) => !spec.peers.some((p) => p.name === k));
  if (unknownPeer) throw new VmctlError('INVALID_INPUT', `lab ${spec.name} has no peer '${unknownPeer}'`, { hint: `its peers: ${spec.peers.map((p) => p.name).join(', ') || 'none'}` });
  const host = hostCommands(spec);
  const trusted = loaded.shipped || opts.trust === true;
  if (!loaded.shipped && host.length > 0) {
    if (opts.trust) op.notice(`--trust: this lab's ${host.length} host command(s) will run on this machine as ${process.env.USER ?? 'you'}:\n${host.map((h) => `    [${h.exercise} ${h.kind}] ${h.run}`).join('\n')}`);
    else op.warn(`this lab has ${host.length} host command(s) (checks/solutions run on this machine); they will not run unless you bring it up with --trust after reading them (vmctl lab show ${opts.lab})`);
  }

  // templates of the VM entries (their memory counts against the limits)
  const templates = new Map<string, number>();
  for (const vm of spec.vms) {
    if (vm.memory === undefined && !templates.has(vm.template)) templates.set(vm.template, (await loadTemplate(vm.template)).spec.memoryMiB);
  }
  const memoryOf = (vm: LabSpec['vms'][number]) => (vm.memory !== undefined ? sizeMiB(vm.memory)! : templates.get(vm.template)!);

  const t0 = performance.now();
  const probe = planLab(spec, opts.prefix, { memoryOf });
  await op.lease(`lab/${probe.id}`, `lab '${probe.id}'`);

  // an earlier lab up or down of this lab
  let recovered = false;
  const existing = await readLabRecord(conn, probe.id);
  if (existing) {
    const r = existing.record;
    if (r.state === 'ready') {
      if (r.sha256 !== loaded.sha256 || r.file !== loaded.file) {
        throw new VmctlError('CONFLICT', `lab ${probe.id} is up from ${r.file === loaded.file ? 'an earlier version of that file' : r.file}`, {
          hint: `vmctl lab down ${spec.name} --prefix ${opts.prefix} first, or use another --prefix`,
        });
      }
      const { broken, missing, moved } = await labIsWhole(op, r);
      if (broken) {
        throw new VmctlError('CONFLICT', `lab ${probe.id} is up but damaged: ${broken}`, { hint: `vmctl lab down ${spec.name} --prefix ${opts.prefix}, then lab up again` });
      }
      // a VM that is gone (deleted: cattle are replaced, not repaired) is made again from the lab's definition
      let rec = r;
      if (missing.length > 0) rec = await repairLab(op, { spec, prefix: opts.prefix, record: r, keys: missing, memoryOf, ...(opts.accel ? { accel: opts.accel } : {}), ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) });
      // start what is stopped; nothing else changes
      const started: string[] = [];
      for (const v of rec.vms) {
        if (moved.includes(v.key) || missing.includes(v.key)) continue;
        const dom = (await lookupVm(conn, v.name))!;
        if ((await dom.state()).state === 'shutoff') {
          await dom.start();
          started.push(v.key);
        }
      }
      if (started.length > 0) op.notice(`started ${started.join(', ')}`);
      const vms = await Promise.all(rec.vms.filter((v) => !moved.includes(v.key)).map(async (v) => ({ key: v.key, name: v.name, addresses: {}, ...(await sshOf(conn, v.name)) })));
      return result(probe, rec, { unchanged: started.length === 0 && missing.length === 0, ...(missing.length > 0 ? { replaced: missing } : {}), tookMs: Math.round(performance.now() - t0), hostCommands: host.length }, vms);
    }
    if (recordLiveness(r) === 'alive') throw new VmctlError('CONFLICT', `lab ${probe.id} is busy: vmctl ${r.op.kind} (pid ${r.op.pid}) is working on it`, { hint: 'wait for it to finish' });
    op.notice(`lab ${probe.id}: an earlier vmctl ${r.op.kind} was interrupted (${r.state}); removing what it made first`);
    await teardownLab(op, r);
    recovered = true;
  }

  // limits: memory on the host
  const free = Number((await conn.freeMemory()) / (1024n * 1024n));
  if (probe.memoryMiB > free) {
    throw new VmctlError('RESOURCE', `lab ${probe.id} needs ${probe.memoryMiB} MiB of memory, the host has ${free} MiB free`, { hint: 'stop other VMs or labs first (vmctl lab list)' });
  }
  // names that must be free (a network or VM vmctl did not record is never touched)
  const ownNets = new Set(probe.networks.map((n) => n.name));
  const allNets = new Set((await conn.listNetworks()).map((n) => n.name));
  const clash = [...ownNets].find((n) => allNets.has(n));
  if (clash) throw new VmctlError('CONFLICT', `a network named ${clash} exists already and is not part of a lab vmctl recorded`, { hint: `remove it yourself (virsh net-destroy ${clash}; virsh net-undefine ${clash}) or use another --prefix` });
  const plan = planLab(spec, opts.prefix, { memoryOf, subnets: await pickSubnets(conn, spec, ownNets) });
  for (const n of plan.networks) {
    const want = spec.networks.find((s) => s.name === n.key)!.subnet;
    if (n.subnet !== want) op.notice(`network ${n.key}: ${want} is in use on this host; using ${n.subnet}`);
  }

  // one image per name, once, before the VMs are made side by side
  for (const image of new Set(await Promise.all(spec.vms.map(async (v) => v.image ?? (await loadTemplate(v.template)).spec.image ?? 'debian-12')))) {
    await op.step(`image ${image}`, () => ensureImage(conn, image, { signal: op.signal, onProgress: (p) => op.progress(p), onLog: (m) => op.log.info(m) }));
  }

  // every VM planned (names free, template valid, distinct SSH ports) before anything is made
  const candidates = forwardPortCandidates();
  const plans = new Map<string, CreatePlan>();
  for (const vm of plan.vms) {
    plans.set(vm.key, await planLabVm(op.scoped(vm.key), plan, vm, { ...opts, candidates }));
  }
  // under TCG, VMs booting side by side that ask for more vCPUs than the host has only slow each
  // other down (bench:lab: 3 × 2 vCPUs on 2 cores took 1.5× as long as 3 × 1): the VMs whose
  // lab entry does not set cpus get 1
  const oneCpu: string[] = [];
  const totalCpus = [...plans.values()].reduce((a, p) => a + p.cpus, 0);
  const hostCpus = (await conn.nodeInfo()).cpus;
  if (plan.vms.length > 1 && totalCpus > hostCpus && [...plans.values()].every((p) => p.domainType === 'qemu')) {
    for (const vm of plan.vms) {
      if (vm.entry.cpus !== undefined || plans.get(vm.key)!.cpus <= 1) continue;
      plans.set(vm.key, await planLabVm(op.scoped(vm.key), plan, { ...vm, entry: { ...vm.entry, cpus: 1 } }, { ...opts, candidates }));
      oneCpu.push(vm.key);
    }
    if (oneCpu.length > 0) op.notice(`TCG: the lab's ${plan.vms.length} VMs would ask for ${totalCpus} vCPUs of this host's ${hostCpus}; ${oneCpu.join(', ')} get 1 vCPU each (set cpus: in the lab file to choose)`);
  }
  const warned = [...plans.values()].find((p) => p.accelWarning);
  if (warned?.accelWarning) op.warn(warned.accelWarning);
  op.throwIfAborted();

  // 1. the record, before anything is made
  let record: LabRecord = {
    v: 1,
    id: plan.id,
    lab: spec.name,
    prefix: plan.prefix,
    file: loaded.file,
    sha256: loaded.sha256,
    shipped: loaded.shipped,
    trusted,
    peers,
    state: 'creating',
    op: opStamp('lab-up', op.id),
    networks: plan.networks.map((n) => ({ key: n.key, name: n.name, uuid: n.uuid, subnet: n.subnet, mode: n.mode })),
    vms: plan.vms.map((v) => ({ key: v.key, name: v.name, uuid: plans.get(v.key)!.uuid })),
    ...(oneCpu.length > 0 ? { oneCpu } : {}),
    snapshots: [],
    createdAt: new Date().toISOString(),
  };
  const secret = await writeLabRecord(conn, record);
  op.undo.push(`lab record ${plan.id}`, (c) => removeLabRecord(c, plan.id));
  await op.fault('after-record');

  // 2. networks. A NAT network's subnet may have been taken meanwhile (another lab up
  // beside this one): then it moves to a free one, and the VMs' addresses with it.
  await op.step('networks', async () => {
    for (const n of plan.networks) {
      for (let attempt = 1; ; attempt++) {
        const net = await conn.defineNetwork(xmlBuilder.build(labNetworkXmlObject(n)) as string);
        const undoNet = async (c: Connection) => {
          const cur = await c.lookupNetwork(n.name).catch((e: unknown) => (notFound(e) ? undefined : Promise.reject(e)));
          if (!cur || cur.uuidString !== n.uuid) return;
          if (await cur.isActive()) await cur.destroy();
          await cur.undefine();
        };
        op.undo.push(`network ${n.name}`, undoNet);
        try {
          await net.start();
          break;
        } catch (e) {
          if (!(n.mode === 'nat' && attempt < 5 && e instanceof LibvirtError && /in use|overlap|already/i.test(e.message))) throw e;
          await undoNet(conn);
          const was = n.subnet;
          const moved = (await pickSubnets(conn, { ...spec, networks: spec.networks.filter((x) => x.name === n.key).map((x) => ({ ...x, subnet: was })) }, ownNets)).get(n.key)!;
          moveSubnet(plan, n.key, moved);
          op.notice(`network ${n.key}: ${was} was taken meanwhile; using ${moved}`);
          record = { ...record, networks: record.networks.map((x) => (x.key === n.key ? { ...x, subnet: moved } : x)) };
          await writeLabRecord(conn, record, secret.uuidString);
        }
      }
      await net0(conn, n.name).then((x) => x.setAutostart(true));
      op.phase('network', `${n.key} ${n.subnet} (${n.mode}${n.mode === 'isolated' ? ', no host address' : `, host ${n.gateway}`})`);
    }
  });
  // the seeds carry the final addresses
  for (const vm of plan.vms) {
    const input = labVmCreateInput(plan, vm);
    const internal = plans.get(vm.key)!.internal;
    internal.extraUserData = input.extraUserData;
    internal.extraNetworkConfig = input.extraNetworkConfig;
  }
  await op.fault('after-networks');

  // 3. VMs, level by level; side by side within a level. The first failure stops its siblings.
  const inner = new AbortController();
  const signal = AbortSignal.any([op.signal, inner.signal]);
  const scopedFor = (key: string) => op.scoped(key, { signal });
  const created = new Map<string, { ssh?: { host: string; port: number; user: string } }>();
  for (const level of plan.levels) {
    const settled = await Promise.allSettled(
      level.map(async (key) => {
        const vop = scopedFor(key);
        try {
          const r = await applyCreate(vop, plans.get(key)!);
          created.set(key, { ...(r.ssh ? { ssh: r.ssh } : {}) });
          await vop.fault(`after-vm-${key}`);
        } catch (e) {
          inner.abort(e);
          throw e;
        }
      }),
    );
    const rejected = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected').map((s) => s.reason as unknown);
    // the first real failure, not the siblings it stopped (an interruption becomes ABORTED in runOperation)
    if (rejected.length > 0) throw op.signal.aborted ? rejected[0] : (inner.signal.reason ?? rejected[0]);
  }
  op.throwIfAborted();

  // 4. the baseline every `lab reset` goes back to
  if (spec.baseline) await takeLabSnapshot(op, record, BASELINE, { onRecord: async (r) => void (record = r) });

  // 5. whole
  record = { ...record, state: 'ready', op: opStamp('lab-up', op.id) };
  await writeLabRecord(conn, record, secret.uuidString);
  const vms = plan.vms.map((v) => ({ key: v.key, name: v.name, addresses: Object.fromEntries(v.nics.map((n) => [n.network, n.address])), ...created.get(v.key) }));
  return result(plan, record, { tookMs: Math.round(performance.now() - t0), hostCommands: host.length, ...(recovered ? { recovered } : {}) }, vms);
}

async function sshOf(conn: Connection, name: string): Promise<{ ssh?: { host: string; port: number; user: string } }> {
  try {
    const t = await vmSshTarget(conn, name, { running: false });
    return { ssh: { host: t.host, port: t.port, user: t.user } };
  } catch {
    return {};
  }
}
