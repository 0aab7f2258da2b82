/** CLI flags (--cpus, --memory, --disk-size, --image, --network, --ssh-key) applied on top of a resolved template. */
import type { TemplateProblem } from './problems.js';

/**
 * CLI flags applied on top of the resolved template. Values are passed as the
 * user typed them (numbers or strings); they go through the same validation
 * and problems name the flag.
 */
export interface TemplateOverrides {
  /** --cpus */
  cpus?: unknown;
  /** --memory: MiB or a size string ("2GiB") */
  memory?: unknown;
  /** --disk-size: size of the first disk, GiB or a size string */
  diskSize?: unknown;
  /** --image: base image of the first disk */
  image?: unknown;
  /** --network: "default" / "network=NAME", "bridge=br0", or "user"; replaces the first NIC */
  network?: unknown;
  /** --ssh-key: public key lines (the CLI reads the files), added to cloudInit.sshKeys */
  sshKeys?: readonly unknown[];
  /** a lab's NICs on its networks, appended after the template's */
  extraNics?: readonly { network: string; mac: string; model?: string }[];
  /** a lab VM's NIC model: every NIC (emulated e1000 vs para-virtual virtio) */
  nicModel?: unknown;
  /** a lab VM's root disk bus */
  diskBus?: unknown;
  onCrash?: unknown;
  watchdog?: unknown;
}

const OVERRIDE_FLAGS = {
  cpus: '--cpus',
  memory: '--memory',
  diskSize: '--disk-size',
  image: '--image',
  network: '--network',
  sshKeys: '--ssh-key',
} as const;

function numeric(v: unknown): unknown {
  return typeof v === 'string' && /^[0-9]+$/.test(v.trim()) ? Number(v.trim()) : v;
}

/** Parse --network into a NIC, keeping model/mac (and forwards, for user→user) of the NIC it replaces. */
export function networkOverride(
  value: unknown,
  previous: Record<string, unknown> | undefined,
): { nic: Record<string, unknown> } | { error: string } {
  const keep: Record<string, unknown> = {};
  if (previous?.model !== undefined) keep.model = previous.model;
  if (previous?.mac !== undefined) keep.mac = previous.mac;
  if (typeof value !== 'string') return { nic: { type: 'network', network: value, ...keep } };
  const m = /^(network|bridge|user)(?:[=:](.*))?$/s.exec(value);
  if (!m) return { nic: { type: 'network', network: value, ...keep } };
  const [, kind, arg] = m;
  if (kind === 'user') {
    if (arg !== undefined) return { error: 'user takes no argument: use --network user' };
    const forwards = previous?.type === 'user' && Array.isArray(previous.forwards) ? previous.forwards : [{ guestPort: 22 }];
    return { nic: { type: 'user', forwards, ...keep } };
  }
  if (kind === 'bridge') return { nic: { type: 'bridge', bridge: arg ?? '', ...keep } };
  return { nic: { type: 'network', network: arg ?? '', ...keep } };
}

/** Apply overrides to a validated (defaulted) document; returns the new document and which pointers are flags. */
export function applyOverrides(
  doc: Record<string, unknown>,
  o: TemplateOverrides,
  templateName: string,
): { doc: Record<string, unknown>; flags: Map<string, string>; problems: TemplateProblem[] } {
  const out = structuredClone(doc);
  const flags = new Map<string, string>();
  const problems: TemplateProblem[] = [];
  const flagProblem = (flag: string, message: string): void => {
    problems.push({ source: flag, path: '', rule: 'override', message });
  };
  if (o.cpus !== undefined) {
    out.cpus = numeric(o.cpus);
    flags.set('/cpus', OVERRIDE_FLAGS.cpus);
  }
  if (o.memory !== undefined) {
    out.memory = numeric(o.memory);
    flags.set('/memory', OVERRIDE_FLAGS.memory);
  }
  if (o.diskSize !== undefined) {
    const disks = out.disks as Record<string, unknown>[];
    if (disks.length === 0) flagProblem(OVERRIDE_FLAGS.diskSize, `template "${templateName}" has no disk`);
    else {
      disks[0]!.size = numeric(o.diskSize);
      flags.set('/disks/0/size', OVERRIDE_FLAGS.diskSize);
    }
  }
  if (o.image !== undefined) {
    out.image = o.image;
    flags.set('/image', OVERRIDE_FLAGS.image);
  }
  if (o.network !== undefined) {
    const nics = out.nics as Record<string, unknown>[];
    const r = networkOverride(o.network, nics[0]);
    if ('error' in r) flagProblem(OVERRIDE_FLAGS.network, r.error);
    else {
      nics[0] = r.nic;
      flags.set('/nics/0', OVERRIDE_FLAGS.network);
    }
  }
  if (o.sshKeys !== undefined && o.sshKeys.length > 0) {
    const ci = out.cloudInit as { sshKeys: unknown[] } | undefined;
    if (!ci) flagProblem(OVERRIDE_FLAGS.sshKeys, `template "${templateName}" has no cloudInit section to install keys with`);
    else {
      for (const key of o.sshKeys) {
        flags.set(`/cloudInit/sshKeys/${ci.sshKeys.length}`, OVERRIDE_FLAGS.sshKeys);
        ci.sshKeys.push(typeof key === 'string' ? key.trim() : key);
      }
    }
  }
  if (o.extraNics !== undefined) {
    const nics = out.nics as Record<string, unknown>[];
    for (const n of o.extraNics) {
      flags.set(`/nics/${nics.length}`, 'lab networks');
      nics.push({ type: 'network', network: n.network, mac: n.mac, ...(n.model !== undefined ? { model: n.model } : {}) });
    }
  }
  if (o.nicModel !== undefined) {
    (out.nics as Record<string, unknown>[]).forEach((n, i) => {
      n.model = o.nicModel;
      flags.set(`/nics/${i}/model`, 'lab nicModel');
    });
  }
  if (o.diskBus !== undefined) {
    const disks = out.disks as Record<string, unknown>[];
    if (disks.length > 0) {
      disks[0]!.bus = o.diskBus;
      flags.set('/disks/0/bus', 'lab diskBus');
    }
  }
  for (const k of ['onCrash', 'watchdog'] as const) {
    if (o[k] !== undefined) {
      out[k] = o[k];
      flags.set(`/${k}`, `lab ${k}`);
    }
  }
  return { doc: out, flags, problems };
}
