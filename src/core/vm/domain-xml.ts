/**
 * VmSpec → libvirt domain XML (libvirt 9.0 / QEMU 7.2, Debian 12), built with
 * fast-xml-parser's XMLBuilder: the library escapes every text and attribute
 * value; nothing here pastes strings into XML. Values that XML 1.0 cannot
 * carry at all (control characters) are refused before building.
 *
 * Choices worth knowing:
 * - kvm: `<cpu mode='host-passthrough'>`; qemu (TCG): `qemu64`, a model TCG
 *   emulates everywhere (host-passthrough is KVM-only).
 * - UEFI: `<os firmware='efi'>` with Secure Boot and enrolled keys off, so
 *   libvirt's firmware autoselection picks Debian's plain OVMF
 *   (/usr/share/qemu/firmware/60-edk2-x86_64.json → OVMF_CODE_4M.fd +
 *   OVMF_VARS_4M.fd) and keeps the NVRAM in
 *   /var/lib/libvirt/qemu/nvram/<name>_VARS.fd (undefine needs the NVRAM flag).
 *   With an explicit `loader` in the spec, `<loader>`/`<nvram>` name the files.
 * - The cloud-init seed is a read-only cdrom on a virtio-scsi controller (any machine type;
 *   kernels without AHCI, like Debian's cloud kernel, still see it).
 * - User-mode NICs with port forwards: Debian 12's libvirt 9.0 is built with
 *   passt support disabled (debian/patches/debian/Disable-passt-support.patch:
 *   `<backend type='passt'/>` is rejected by the XML parser), and
 *   `<portForward>` is only valid with passt. So forwards go through the QEMU
 *   namespace: `<qemu:commandline>` with `-netdev user,id=vmctlnetN,hostfwd=…`
 *   and `-device <model>,netdev=vmctlnetN,bus=…,addr=…` (a fixed slot libvirt
 *   does not use, see commandlineNicAddress). Host addresses are loopback only
 *   (checked here again). Every option value is checked against a strict
 *   pattern, so no ',' can smuggle extra QEMU options. User NICs without
 *   forwards are plain `<interface type='user'>`.
 * - `<metadata>` carries a `vmctl:vm` element (namespace VMCTL_XMLNS) with the
 *   template, image, the volumes vmctl created and the forwards; read it back
 *   with parseVmctlMetadata().
 */
import { XMLBuilder } from 'fast-xml-parser';
import { metadataElement, xmlParserWith } from '../xml.js';
import { VmctlError } from '../errors.js';
import { assertVmName, MAC_RE, XML_ILLEGAL_RE } from '../names.js';
import type { DiskSpec, NicModel, NicSpec, PortForward, VmSpec } from '../template/model.js';

export const VMCTL_XMLNS = 'https://vmctl.dev/xmlns/vm/1';
export const QEMU_XMLNS = 'http://libvirt.org/schemas/domain/qemu/1.0';

type XmlNode = Record<string, unknown>;

const builder = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  format: true,
  indentBy: '  ',
  suppressEmptyNode: true,
  suppressBooleanAttributes: false,
});

/** QEMU device names for NIC models on the -device command line. */
const QEMU_NIC_DEVICE: Record<NicModel, string> = {
  virtio: 'virtio-net-pci',
  e1000: 'e1000',
  e1000e: 'e1000e',
  rtl8139: 'rtl8139',
};

const LOOPBACK_RE = /^127(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/;

function internal(message: string): VmctlError {
  return new VmctlError('INTERNAL', `domain XML: ${message}`);
}

function checkPort(p: number, what: string): number {
  if (!Number.isInteger(p) || p < 1 || p > 65535) throw internal(`${what} ${p} is not a port number`);
  return p;
}

function hostfwd(f: PortForward): string {
  if (!LOOPBACK_RE.test(f.host)) {
    throw new VmctlError('INVALID_INPUT', `port forward host ${JSON.stringify(f.host)} is not a loopback address`, {
      hint: 'forwards listen on 127.x.y.z only',
    });
  }
  if (f.proto !== 'tcp' && f.proto !== 'udp') throw internal(`bad forward protocol ${String(f.proto)}`);
  return `hostfwd=${f.proto}:${f.host}:${checkPort(f.hostPort, 'host port')}-:${checkPort(f.guestPort, 'guest port')}`;
}

function macOf(nic: NicSpec): string | undefined {
  if (nic.mac === undefined) return undefined;
  const mac = nic.mac.toLowerCase();
  if (!MAC_RE.test(mac)) throw internal(`bad MAC address ${JSON.stringify(nic.mac)}`);
  return mac;
}

function diskElement(d: DiskSpec, bootOrder: number | undefined): XmlNode {
  return {
    '@_type': 'file',
    '@_device': 'disk',
    driver: { '@_name': 'qemu', '@_type': d.format, '@_discard': 'unmap' },
    source: { '@_file': d.volume.path },
    target: { '@_dev': d.target, '@_bus': d.bus },
    ...(bootOrder !== undefined ? { boot: { '@_order': bootOrder } } : {}),
  };
}

function interfaceElement(nic: NicSpec): XmlNode {
  const mac = macOf(nic);
  const common = { ...(mac ? { mac: { '@_address': mac } } : {}) };
  const model = { model: { '@_type': nic.model } };
  switch (nic.type) {
    case 'network':
      return { '@_type': 'network', ...common, source: { '@_network': nic.network }, ...model };
    case 'bridge':
      return { '@_type': 'bridge', ...common, source: { '@_bridge': nic.bridge }, ...model };
    case 'user':
      return { '@_type': 'user', ...common, ...model };
  }
}

/**
 * Where a commandline NIC sits on the root bus. QEMU creates plain `-device`
 * options before libvirt's JSON ones, so an unaddressed NIC would take the
 * first free slot and collide with what libvirt placed there (seen: "slot 1
 * function 0 not available for pcie-root-port, in use by virtio-net-pci").
 * libvirt fills slots from the bottom: on q35 it packs 8 root ports per slot
 * from 0x1 (0x1f is the LPC/SATA), on pc it gives each device a slot from
 * 0x3. With at most 16 disks and 8 NICs (schema limits) libvirt stays below
 * 0x08 on q35 and below 0x18 on pc, so vmctl uses 0x10+n on q35 and 0x1f-n
 * on pc (n = NIC index, < 8).
 */
export function commandlineNicAddress(machine: VmSpec['machine'], index: number): { bus: string; addr: string } {
  if (!Number.isInteger(index) || index < 0 || index > 7) throw internal(`NIC index ${index} out of range`);
  const slot = machine === 'q35' ? 0x10 + index : 0x1f - index;
  return { bus: machine === 'q35' ? 'pcie.0' : 'pci.0', addr: `0x${slot.toString(16)}` };
}

/** `-netdev`/`-device` pairs for user NICs with forwards (see the header comment). */
function qemuNetArgs(nic: NicSpec & { type: 'user' }, index: number, machine: VmSpec['machine']): string[] {
  const id = `vmctlnet${index}`;
  const netdev = ['user', `id=${id}`, ...nic.forwards.map(hostfwd)].join(',');
  const mac = macOf(nic);
  const { bus, addr } = commandlineNicAddress(machine, index);
  const device = [QEMU_NIC_DEVICE[nic.model], `netdev=${id}`, `bus=${bus}`, `addr=${addr}`, ...(mac ? [`mac=${mac}`] : [])].join(',');
  for (const opt of [netdev, device]) {
    // defence in depth: only the characters the pieces above can produce
    if (!/^[a-z0-9-]+(,[a-z]+=[a-z0-9.:-]+)*$/.test(opt)) throw internal(`unsafe QEMU option ${JSON.stringify(opt)}`);
  }
  return ['-netdev', netdev, '-device', device];
}

/** Refuse strings XML 1.0 cannot represent (escaping cannot help with those). */
function assertXmlText(node: unknown, where: string): void {
  if (typeof node === 'string') {
    if (XML_ILLEGAL_RE.test(node)) {
      throw new VmctlError('INVALID_INPUT', `${where}: ${JSON.stringify(node)} contains characters XML cannot carry`, {
        hint: 'remove control characters from the value',
      });
    }
  } else if (Array.isArray(node)) {
    node.forEach((n, i) => assertXmlText(n, `${where}[${i}]`));
  } else if (node !== null && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) assertXmlText(v, `${where}/${k.replace(/^@_/, '@')}`);
  }
}

/** The domain XML of a VM. Throws INVALID_INPUT / INTERNAL for a spec that cannot be expressed safely. */
/** `extraMetadata`: further elements of <metadata> in their own namespaces (e.g. an operation's intent marker). */
export function buildDomainXml(spec: VmSpec, extraMetadata?: Record<string, unknown>): string {
  assertVmName(spec.name);
  if (!Number.isInteger(spec.cpus) || spec.cpus < 1) throw internal(`bad vCPU count ${spec.cpus}`);
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 1) throw internal(`bad memory ${spec.memoryMiB}`);
  const kvm = spec.domainType === 'kvm';

  // <os>
  const os: XmlNode = {};
  if (spec.firmware.type === 'uefi' && !spec.firmware.loader) os['@_firmware'] = 'efi';
  os.type = { '@_arch': 'x86_64', '@_machine': spec.machine, '#text': 'hvm' };
  if (spec.firmware.type === 'uefi') {
    if (spec.firmware.loader) {
      const l = spec.firmware.loader;
      os.loader = { '@_readonly': 'yes', '@_secure': 'no', '@_type': 'pflash', '#text': l.path };
      os.nvram = { '@_template': l.nvramTemplate, ...(l.nvramPath !== undefined ? { '#text': l.nvramPath } : {}) };
    } else {
      os.firmware = {
        feature: [
          { '@_enabled': 'no', '@_name': 'enrolled-keys' },
          { '@_enabled': 'no', '@_name': 'secure-boot' },
        ],
      };
    }
  }
  if (spec.boot.type === 'kernel') {
    os.kernel = spec.boot.kernel;
    if (spec.boot.initrd !== undefined) os.initrd = spec.boot.initrd;
    if (spec.boot.cmdline !== '') os.cmdline = spec.boot.cmdline;
  }

  // <devices>
  const devices: XmlNode = {};
  const disks: XmlNode[] = spec.disks.map((d, i) => diskElement(d, spec.boot.type === 'disk' && i === 0 ? 1 : undefined));
  if (spec.seed) {
    disks.push({
      '@_type': 'file',
      '@_device': 'cdrom',
      driver: { '@_name': 'qemu', '@_type': 'raw' },
      source: { '@_file': spec.seed.volume.path },
      target: { '@_dev': spec.seed.target, '@_bus': spec.seed.bus },
      readonly: '',
    });
  }
  if (disks.length > 0) devices.disk = disks;

  const controllers: XmlNode[] = [];
  if (spec.seed || spec.disks.some((d) => d.bus === 'scsi')) controllers.push({ '@_type': 'scsi', '@_index': 0, '@_model': 'virtio-scsi' });
  if (spec.graphics === 'none') controllers.push({ '@_type': 'usb', '@_model': 'none' });
  if (controllers.length > 0) devices.controller = controllers;

  const qemuArgs: string[] = [];
  const interfaces: XmlNode[] = [];
  spec.nics.forEach((nic, i) => {
    if (nic.type === 'user' && nic.forwards.length > 0) qemuArgs.push(...qemuNetArgs(nic, i, spec.machine));
    else interfaces.push(interfaceElement(nic));
  });
  if (interfaces.length > 0) devices.interface = interfaces;

  if (spec.serial) {
    devices.serial = { '@_type': 'pty', target: { '@_port': 0 } };
    devices.console = { '@_type': 'pty', target: { '@_type': 'serial', '@_port': 0 } };
  }
  const channels: XmlNode[] = [{ '@_type': 'unix', target: { '@_type': 'virtio', '@_name': 'org.qemu.guest_agent.0' } }];
  if (spec.graphics === 'spice') channels.push({ '@_type': 'spicevmc', target: { '@_type': 'virtio', '@_name': 'com.redhat.spice.0' } });
  devices.channel = channels;

  if (spec.graphics !== 'none') {
    devices.input = { '@_type': 'tablet', '@_bus': 'usb' };
    devices.graphics = {
      '@_type': spec.graphics,
      '@_autoport': 'yes',
      listen: { '@_type': 'address', '@_address': '127.0.0.1' },
    };
    devices.video = { model: { '@_type': spec.graphics === 'spice' ? 'qxl' : 'vga', '@_heads': 1, '@_primary': 'yes' } };
  }
  if (spec.watchdog !== 'none') devices.watchdog = { '@_model': 'i6300esb', '@_action': spec.watchdog };
  // a crash reaches on_crash only through a panic notifier (pvpanic); the default (destroy) needs none
  if (spec.onCrash !== 'destroy') devices.panic = { '@_model': 'isa' };
  devices.rng = { '@_model': 'virtio', backend: { '@_model': 'random', '#text': '/dev/urandom' } };
  devices.memballoon = { '@_model': 'virtio' };

  // <metadata>
  const m = spec.metadata;
  const volumes: XmlNode[] = spec.disks
    .filter((d) => d.createdByVmctl)
    .map((d) => ({ '@_role': 'disk', '@_disk': d.name, '@_pool': d.volume.pool, '@_name': d.volume.name, '@_path': d.volume.path }));
  if (spec.seed?.createdByVmctl) {
    volumes.push({ '@_role': 'seed', '@_pool': spec.seed.volume.pool, '@_name': spec.seed.volume.name, '@_path': spec.seed.volume.path });
  }
  const forwards: XmlNode[] = spec.nics.flatMap((nic, i) =>
    nic.type === 'user'
      ? nic.forwards.map((f) => ({ '@_nic': i, '@_proto': f.proto, '@_host': f.host, '@_host-port': f.hostPort, '@_guest-port': f.guestPort }))
      : [],
  );
  const vmctlMeta: XmlNode = {
    '@_xmlns:vmctl': VMCTL_XMLNS,
    'vmctl:template': m.template,
    ...(m.image !== undefined ? { 'vmctl:image': m.image } : {}),
    'vmctl:created-by': m.createdBy,
    ...(m.createdAt !== undefined ? { 'vmctl:created-at': m.createdAt } : {}),
    ...(m.sshUser !== undefined ? { 'vmctl:ssh-user': m.sshUser } : {}),
    ...(volumes.length > 0 ? { 'vmctl:volumes': { 'vmctl:volume': volumes } } : {}),
    ...(forwards.length > 0 ? { 'vmctl:forwards': { 'vmctl:forward': forwards } } : {}),
  };

  const domain: XmlNode = {
    '@_type': spec.domainType,
    ...(qemuArgs.length > 0 ? { '@_xmlns:qemu': QEMU_XMLNS } : {}),
    name: spec.name,
    ...(spec.uuid !== undefined ? { uuid: spec.uuid } : {}),
    ...(spec.description !== undefined ? { description: spec.description } : {}),
    metadata: { 'vmctl:vm': vmctlMeta, ...(extraMetadata ?? {}) },
    memory: { '@_unit': 'MiB', '#text': spec.memoryMiB },
    currentMemory: { '@_unit': 'MiB', '#text': spec.memoryMiB },
    vcpu: { '@_placement': 'static', '#text': spec.cpus },
    os,
    features: { acpi: '', apic: '' },
    cpu: kvm
      ? { '@_mode': 'host-passthrough', '@_check': 'none', '@_migratable': 'on' }
      : { '@_mode': 'custom', '@_match': 'exact', '@_check': 'none', model: { '@_fallback': 'forbid', '#text': 'qemu64' } },
    clock: {
      '@_offset': 'utc',
      timer: [
        { '@_name': 'rtc', '@_tickpolicy': 'catchup' },
        { '@_name': 'pit', '@_tickpolicy': 'delay' },
        { '@_name': 'hpet', '@_present': 'no' },
      ],
    },
    on_poweroff: 'destroy',
    on_reboot: 'restart',
    on_crash: spec.onCrash,
    pm: { 'suspend-to-mem': { '@_enabled': 'no' }, 'suspend-to-disk': { '@_enabled': 'no' } },
    devices,
    ...(qemuArgs.length > 0 ? { 'qemu:commandline': { 'qemu:arg': qemuArgs.map((value) => ({ '@_value': value })) } } : {}),
  };
  assertXmlText(domain, 'domain');
  return (builder.build({ domain }) as string).trimEnd() + '\n';
}

// ---------------------------------------------------------------------------
// reading vmctl's metadata back (delete, ssh, list)

export interface VmctlVolumeRecord {
  role: 'disk' | 'seed';
  disk?: string;
  pool: string;
  name: string;
  path?: string;
}

export interface VmctlForwardRecord {
  nic: number;
  proto: 'tcp' | 'udp';
  host: string;
  hostPort: number;
  guestPort: number;
}

export interface VmctlDomainMetadata {
  template: string;
  image?: string;
  createdBy?: string;
  createdAt?: string;
  sshUser?: string;
  volumes: VmctlVolumeRecord[];
  forwards: VmctlForwardRecord[];
}

const parser = xmlParserWith((_name, jpath) => /(^|\.)(volume|forward)$/.test(String(jpath).replace(/[^.]*:/g, '')));

function localName(key: string): string {
  const i = key.indexOf(':');
  return i < 0 ? key : key.slice(i + 1);
}

function childByLocalName(node: Record<string, unknown>, name: string): unknown {
  for (const [k, v] of Object.entries(node)) if (!k.startsWith('@_') && localName(k) === name) return v;
  return undefined;
}

function text(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  if (v && typeof v === 'object' && '#text' in v) return String((v as Record<string, unknown>)['#text']);
  return undefined;
}

/**
 * vmctl's metadata from a domain XML (as libvirt returns it), or null when the
 * domain was not created by vmctl. Matches the element by namespace URI, not
 * by prefix.
 */
export function parseVmctlMetadata(xml: string): VmctlDomainMetadata | null {
  let doc: Record<string, unknown>;
  try {
    doc = parser.parse(xml) as Record<string, unknown>;
  } catch (err) {
    throw new VmctlError('LIBVIRT', `cannot parse domain XML: ${(err as Error).message}`, { cause: err });
  }
  const domain = doc.domain as Record<string, unknown> | undefined;
  const vm = metadataElement(domain?.metadata, VMCTL_XMLNS, 'vm')?.node;
  if (!vm) return null;
  const str = (name: string): string | undefined => text(childByLocalName(vm, name));
  const list = (outer: string, inner: string): Record<string, unknown>[] => {
    const o = childByLocalName(vm, outer);
    if (!o || typeof o !== 'object') return [];
    const items = childByLocalName(o as Record<string, unknown>, inner);
    return (Array.isArray(items) ? items : items ? [items] : []) as Record<string, unknown>[];
  };
  const attr = (n: Record<string, unknown>, a: string): string | undefined => {
    const v = n[`@_${a}`];
    return typeof v === 'string' ? v : undefined;
  };
  const optional = <K extends string>(k: K, v: string | undefined): Partial<Record<K, string>> =>
    (v === undefined ? {} : { [k]: v }) as Partial<Record<K, string>>;
  return {
    template: str('template') ?? '',
    ...optional('image', str('image')),
    ...optional('createdBy', str('created-by')),
    ...optional('createdAt', str('created-at')),
    ...optional('sshUser', str('ssh-user')),
    volumes: list('volumes', 'volume').map((v) => ({
      role: attr(v, 'role') === 'seed' ? 'seed' : 'disk',
      ...optional('disk', attr(v, 'disk')),
      pool: attr(v, 'pool') ?? '',
      name: attr(v, 'name') ?? '',
      ...optional('path', attr(v, 'path')),
    })),
    forwards: list('forwards', 'forward').map((f) => ({
      nic: Number(attr(f, 'nic') ?? 0),
      proto: attr(f, 'proto') === 'udp' ? 'udp' : 'tcp',
      host: attr(f, 'host') ?? '',
      hostPort: Number(attr(f, 'host-port') ?? 0),
      guestPort: Number(attr(f, 'guest-port') ?? 0),
    })),
  };
}

/** QEMU's user-mode network hands its first (only) DHCP lease out at this address, and its forwards go there by default. */
export const USER_NET_GUEST_ADDRESS = '10.0.2.15';
/** QEMU's user-mode network (vmctl sets none of net=, host=, dhcpstart=): 10.0.2.0/24, the host side (gateway) at .2 */
export const USER_NET_PREFIX_LENGTH = 24;
export const USER_NET_GATEWAY = '10.0.2.2';
/** the MAC QEMU gives the first NIC created without one (vmctl's `-device` NICs; libvirt always passes its NICs' MACs) */
export const QEMU_FIRST_DEFAULT_MAC = '52:54:00:12:34:56';

/** What QEMU's user-mode DHCP server will lease to a VM's NIC. */
export interface UserNetLease {
  readonly mac: string;
  readonly address: string;
  readonly prefixLength: number;
  readonly gateway: string;
}

/**
 * The lease of the VM's user-mode NIC, known before it boots: QEMU's DHCP gives its first
 * (only) client 10.0.2.15/24 with the gateway 10.0.2.2. undefined when the VM has no
 * user-mode NIC or several (a second one would be another netdev with its own lease and MAC).
 */
export function userNetLease(nics: readonly { readonly type: string; readonly mac?: string }[]): UserNetLease | undefined {
  const user = nics.filter((n) => n.type === 'user');
  if (user.length !== 1) return undefined;
  const mac = user[0]!.mac?.toLowerCase() ?? QEMU_FIRST_DEFAULT_MAC;
  if (!MAC_RE.test(mac)) return undefined;
  return { mac, address: USER_NET_GUEST_ADDRESS, prefixLength: USER_NET_PREFIX_LENGTH, gateway: USER_NET_GATEWAY };
}
const argParser = xmlParserWith((name) => name.endsWith(':arg'));

/** vmctl's SSH forward in a `-netdev user,…` value (or any text holding one): hostfwd=tcp:ADDR:PORT-:22. */
const SSH_FORWARD_RE = /(hostfwd=tcp:[0-9.]*:)(\d{1,5})(-:22)\b/;

/** The host port of the first SSH forward in `text` (a netdev value, or a whole domain XML). */
export function sshForwardPort(text: string): number | undefined {
  const m = SSH_FORWARD_RE.exec(text);
  return m ? Number(m[2]) : undefined;
}

/** `text` with the SSH forward on host port `from` moved to `to` (other forwards untouched). */
export function withSshForwardPort(text: string, from: number, to: number): string {
  return text.replace(new RegExp(SSH_FORWARD_RE.source, 'g'), (all: string, head: string, port: string, tail: string) => (Number(port) === from ? `${head}${to}${tail}` : all));
}

/**
 * The guest address a user-mode forward of `hostPort` (vmctl's `-netdev user,…,hostfwd=tcp:H:PORT-:GP`)
 * delivers to: the forward's own guest address, else QEMU's default one (vmctl sets no `net=`).
 * A login through that forward proves the guest has this address. undefined: no such forward.
 */
export function userForwardGuestAddress(domainXml: string, hostPort: number): string | undefined {
  let doc: { domain?: Record<string, unknown> };
  try {
    doc = argParser.parse(domainXml) as { domain?: Record<string, unknown> };
  } catch {
    return undefined;
  }
  const cl = Object.entries(doc.domain ?? {}).find(([k]) => k.endsWith(':commandline'))?.[1] as Record<string, unknown> | undefined;
  const args = (Object.entries(cl ?? {}).find(([k]) => k.endsWith(':arg'))?.[1] ?? []) as Array<Record<string, unknown>>;
  if (args.filter((a) => typeof a['@_value'] === 'string' && a['@_value'].startsWith('user,')).length !== 1) return undefined;
  for (const a of args) {
    const v = a['@_value'];
    if (typeof v !== 'string' || !v.startsWith('user,')) continue;
    const opts = v.split(',');
    // another network or DHCP range than QEMU's default: the default address does not apply
    if (opts.some((o) => /^(net|host|dhcpstart|restrict)=/.test(o))) continue;
    for (const o of opts) {
      const m = /^hostfwd=tcp:[0-9.]*:(\d+)-([0-9.]*):\d+$/.exec(o);
      if (m && Number(m[1]) === hostPort) return m[2] || USER_NET_GUEST_ADDRESS;
    }
  }
  return undefined;
}
