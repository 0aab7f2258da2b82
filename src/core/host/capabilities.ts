/** What vmctl reads from libvirt's host capabilities XML (`virsh capabilities`). */
import { xmlParserWith } from '../xml.js';

export interface GuestCapability {
  /** 'hvm' for full virtualization */
  osType: string;
  arch: string;
  emulator?: string;
  /** <domain type=…> values offered for this arch: 'qemu' (TCG), 'kvm' */
  domainTypes: string[];
}

export interface HostCapabilities {
  /** libvirt's host UUID (host_uuid in libvirtd.conf, else SMBIOS) */
  uuid?: string;
  arch?: string;
  cpuVendor?: string;
  cpuModel?: string;
  /** <host><cpu><feature name=…> */
  cpuFeatures: string[];
  guests: GuestCapability[];
}

const parser = xmlParserWith((name) => ['feature', 'guest', 'domain', 'arch'].includes(name));

type Node = Record<string, unknown>;

function obj(v: unknown): Node | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Node) : undefined;
}

function arr(v: unknown): Node[] {
  return Array.isArray(v) ? v.map(obj).filter((x): x is Node => x !== undefined) : [];
}

function text(v: unknown): string | undefined {
  if (typeof v === 'string') return v || undefined;
  if (typeof v === 'number') return String(v);
  const o = obj(v);
  const t = o?.['#text'];
  return typeof t === 'string' && t !== '' ? t : undefined;
}

function firstText(v: unknown): string | undefined {
  return Array.isArray(v) ? text(v[0]) : text(v);
}

function attr(v: Node | undefined, name: string): string | undefined {
  const a = v?.[`@_${name}`];
  return typeof a === 'string' ? a : undefined;
}

export function parseCapabilities(xml: string): HostCapabilities {
  const root = obj(obj(parser.parse(xml))?.['capabilities']) ?? {};
  const host = obj(root['host']);
  const cpu = obj(host?.['cpu']);
  const caps: HostCapabilities = {
    cpuFeatures: arr(cpu?.['feature'])
      .map((f) => attr(f, 'name'))
      .filter((n): n is string => n !== undefined),
    guests: [],
  };
  const uuid = text(host?.['uuid']);
  if (uuid) caps.uuid = uuid;
  // <host><cpu><arch> (the 'arch' isArray rule applies here too)
  const hostArch = firstText(cpu?.['arch']);
  if (hostArch) caps.arch = hostArch;
  const vendor = text(cpu?.['vendor']);
  if (vendor) caps.cpuVendor = vendor;
  const model = text(cpu?.['model']);
  if (model) caps.cpuModel = model;
  for (const g of arr(root['guest'])) {
    const osType = text(g['os_type']) ?? '';
    for (const a of arr(g['arch'])) {
      const gc: GuestCapability = {
        osType,
        arch: attr(a, 'name') ?? '',
        domainTypes: arr(a['domain'])
          .map((d) => attr(d, 'type'))
          .filter((t): t is string => t !== undefined),
      };
      const emulator = text(a['emulator']);
      if (emulator) gc.emulator = emulator;
      caps.guests.push(gc);
    }
  }
  return caps;
}

/** The hvm guest entry for an architecture, if libvirt offers one. */
export function hvmGuest(caps: HostCapabilities, arch: string): GuestCapability | undefined {
  return caps.guests.find((g) => g.osType === 'hvm' && g.arch === arch);
}

/** Whether libvirt offers `<domain type='kvm'>` for hvm guests of this arch. */
export function offersKvm(caps: HostCapabilities, arch = 'x86_64'): boolean {
  return hvmGuest(caps, arch)?.domainTypes.includes('kvm') ?? false;
}

/** The hardware virtualization flags among the host CPU's features. */
export function virtFlags(features: readonly string[]): string[] {
  return features.filter((f) => f === 'vmx' || f === 'svm');
}
