/**
 * The VM model: a template after inheritance, overrides, validation and
 * normalisation (TemplateSpec), and a fully resolved VM ready to become domain
 * XML (VmSpec), built from a TemplateSpec plus what the caller resolved on the
 * host: volume paths in the pool, the accelerator, free host ports.
 */
import { VmctlError } from '../errors.js';
import { assertVmName, HOSTNAME_RE } from '../names.js';

export type Machine = 'q35' | 'pc';
export type FirmwareKind = 'bios' | 'uefi';
export type Accel = 'auto' | 'kvm' | 'tcg';
export type DiskBus = 'virtio' | 'sata' | 'scsi' | 'ide';
export type DiskFormat = 'qcow2' | 'raw';
export type NicModel = 'virtio' | 'e1000' | 'e1000e' | 'rtl8139';
export type Graphics = 'none' | 'vnc' | 'spice';
/** libvirt's <domain type=…>: 'kvm' (hardware) or 'qemu' (TCG emulation) */
export type DomainType = 'kvm' | 'qemu';

export interface PortForward {
  /** loopback address the host side listens on */
  host: string;
  /** 0 in a template means "pick a free port when the VM is created" */
  hostPort: number;
  guestPort: number;
  proto: 'tcp' | 'udp';
}

interface NicCommon {
  model: NicModel;
  mac?: string;
}
export type NicTemplate =
  | (NicCommon & { type: 'network'; network: string })
  | (NicCommon & { type: 'bridge'; bridge: string })
  | (NicCommon & { type: 'user'; forwards: PortForward[] });

export type BootSpec = { type: 'disk' } | { type: 'kernel'; kernel: string; initrd?: string; cmdline: string };

export interface CloudInitTemplate {
  user: string;
  hostname?: string;
  sshKeys: string[];
  packages: string[];
  runcmd: string[];
}

export interface DiskTemplate {
  name: string;
  sizeBytes: number;
  bus: DiskBus;
  format: DiskFormat;
  /** base image of an extra disk; the first disk always uses the VM's image */
  image?: string;
}

export type OnCrash = 'destroy' | 'restart' | 'preserve' | 'coredump-destroy' | 'coredump-restart';
export type Watchdog = 'none' | 'reset' | 'poweroff' | 'pause';

/** A template after extends, overrides, validation and normalisation (sizes in MiB / bytes). */
export interface TemplateSpec {
  description?: string;
  image?: string;
  cpus: number;
  memoryMiB: number;
  machine: Machine;
  firmware: FirmwareKind;
  accel: Accel;
  disks: DiskTemplate[];
  nics: NicTemplate[];
  boot: BootSpec;
  cloudInit?: CloudInitTemplate;
  graphics: Graphics;
  serial: boolean;
  onCrash: OnCrash;
  watchdog: Watchdog;
}

/** A validated template with where it came from. */
export interface ResolvedTemplate {
  /** the template's name (file name without .yaml) */
  name: string;
  /** the files of the extends chain, the template itself first */
  files: string[];
  spec: TemplateSpec;
}

// ---------------------------------------------------------------------------
// VmSpec

export interface VolumeRef {
  pool: string;
  /** volume name in the pool */
  name: string;
  /** path of the volume on the libvirt host (what the domain XML points at) */
  path: string;
}

export interface DiskSpec {
  name: string;
  bus: DiskBus;
  format: DiskFormat;
  /** target device: vda, sda, hda… (assigned by buildVmSpec) */
  target: string;
  sizeBytes: number;
  /** base image the volume is an overlay of, if any */
  backingImage?: string;
  volume: VolumeRef;
  /** vmctl created this volume (delete removes it) */
  createdByVmctl: boolean;
}

export interface SeedSpec {
  bus: 'scsi';
  target: string;
  volume: VolumeRef;
  createdByVmctl: boolean;
}

export type NicSpec =
  | (NicCommon & { type: 'network'; network: string })
  | (NicCommon & { type: 'bridge'; bridge: string })
  | (NicCommon & { type: 'user'; forwards: PortForward[] });

export type FirmwareSpec =
  | { type: 'bios' }
  | {
      type: 'uefi';
      /**
       * Without `loader`, libvirt picks the firmware from the descriptors in
       * /usr/share/qemu/firmware (Debian's `ovmf` package), Secure Boot off,
       * and keeps the NVRAM in /var/lib/libvirt/qemu/nvram/<name>_VARS.fd.
       * With it, exactly these files are used.
       */
      loader?: { path: string; nvramTemplate: string; nvramPath?: string };
    };

/** Debian 12's OVMF (package `ovmf`), the plain (non-Secure-Boot) 4 MiB build. */
export const DEBIAN_OVMF = {
  code: '/usr/share/OVMF/OVMF_CODE_4M.fd',
  vars: '/usr/share/OVMF/OVMF_VARS_4M.fd',
  descriptor: '/usr/share/qemu/firmware/60-edk2-x86_64.json',
} as const;

export interface VmMetadata {
  template: string;
  image?: string;
  /** vmctl version that created the VM */
  createdBy: string;
  /** ISO 8601 */
  createdAt?: string;
  /** the login user cloud-init creates, for `vmctl ssh` */
  sshUser?: string;
}

export interface VmSpec {
  name: string;
  uuid?: string;
  description?: string;
  domainType: DomainType;
  cpus: number;
  memoryMiB: number;
  machine: Machine;
  firmware: FirmwareSpec;
  disks: DiskSpec[];
  /** the cloud-init NoCloud seed ISO, attached as a cdrom */
  seed?: SeedSpec;
  nics: NicSpec[];
  boot: BootSpec;
  graphics: Graphics;
  serial: boolean;
  onCrash: OnCrash;
  watchdog: Watchdog;
  cloudInit?: CloudInitTemplate & { hostname: string };
  metadata: VmMetadata;
}

/**
 * The domain type for an accel setting: `auto` uses KVM when the caller found
 * it usable, `kvm` insists (UNSUPPORTED otherwise), `tcg` always emulates.
 */
export function chooseDomainType(accel: Accel, kvmUsable: boolean): { domainType: DomainType; warning?: string } {
  if (accel === 'tcg') return { domainType: 'qemu' };
  if (kvmUsable) return { domainType: 'kvm' };
  if (accel === 'kvm') {
    throw new VmctlError('UNSUPPORTED', 'the template asks for accel: kvm but KVM is not usable on this host', {
      hint: 'use accel: auto or tcg, or run on a host with /dev/kvm and VT-x/AMD-V',
    });
  }
  return { domainType: 'qemu', warning: 'KVM is not usable on this host: the VM runs under TCG emulation (slow)' };
}

/** The volumes a VM needs, in order, before the caller creates them in the pool. */
export interface VolumePlan {
  disk: string;
  sizeBytes: number;
  format: DiskFormat;
  /** base image to overlay (the VM's image for the first disk) */
  backingImage?: string;
}

export function planDiskVolumes(spec: TemplateSpec, image: string | undefined = spec.image): VolumePlan[] {
  return spec.disks.map((d, i) => {
    const backing = i === 0 ? image : d.image;
    return { disk: d.name, sizeBytes: d.sizeBytes, format: d.format, ...(backing !== undefined ? { backingImage: backing } : {}) };
  });
}

export interface BuildVmSpecInput {
  name: string;
  template: ResolvedTemplate;
  domainType: DomainType;
  /** one per template disk, same order (names must match) */
  volumes: (VolumeRef & { disk: string; createdByVmctl?: boolean })[];
  /** the seed ISO volume; required when the template has cloud-init */
  seed?: VolumeRef & { createdByVmctl?: boolean };
  uuid?: string;
  /** the image of the first disk, when not the template's (e.g. --image was resolved elsewhere) */
  image?: string;
  /** fills host ports left at 0 in port forwards (the caller picked free ports) */
  hostPort?: (f: { nic: number; forward: number; guestPort: number; proto: 'tcp' | 'udp' }) => number;
  firmwareLoader?: { path: string; nvramTemplate: string; nvramPath?: string };
  vmctlVersion: string;
  createdAt?: string;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Target device names: vda…, sda… (sata and scsi share the sd namespace), hda…hdd. */
function targetName(prefix: string, index: number): string {
  let s = '';
  let n = index;
  do {
    s = String.fromCharCode(97 + (n % 26)) + s;
    n = Math.floor(n / 26) - 1;
  } while (n >= 0);
  return prefix + s;
}

const BUS_PREFIX: Record<DiskBus, 'vd' | 'sd' | 'hd'> = { virtio: 'vd', sata: 'sd', scsi: 'sd', ide: 'hd' };

/** Put a resolved template and the caller's host decisions together. Throws INTERNAL on caller mistakes. */
export function buildVmSpec(input: BuildVmSpecInput): VmSpec {
  const name = assertVmName(input.name);
  const t = input.template.spec;
  if (input.uuid !== undefined && !UUID_RE.test(input.uuid)) {
    throw new VmctlError('INVALID_INPUT', `invalid UUID ${JSON.stringify(input.uuid)}`);
  }
  if (input.volumes.length !== t.disks.length) {
    throw new VmctlError('INTERNAL', `buildVmSpec: ${input.volumes.length} volumes for ${t.disks.length} disks`);
  }
  const image = input.image ?? t.image;
  const counters: Record<'vd' | 'sd' | 'hd', number> = { vd: 0, sd: 0, hd: 0 };
  const disks: DiskSpec[] = t.disks.map((d, i) => {
    const vol = input.volumes[i]!;
    if (vol.disk !== d.name) {
      throw new VmctlError('INTERNAL', `buildVmSpec: volume ${i} is for disk "${vol.disk}", expected "${d.name}"`);
    }
    const prefix = BUS_PREFIX[d.bus];
    const backing = i === 0 ? image : d.image;
    return {
      name: d.name,
      bus: d.bus,
      format: d.format,
      target: targetName(prefix, counters[prefix]++),
      sizeBytes: d.sizeBytes,
      ...(backing !== undefined ? { backingImage: backing } : {}),
      volume: { pool: vol.pool, name: vol.name, path: vol.path },
      createdByVmctl: vol.createdByVmctl ?? true,
    };
  });

  let seed: SeedSpec | undefined;
  if (t.cloudInit) {
    if (!input.seed) throw new VmctlError('INTERNAL', 'buildVmSpec: the template has cloud-init but no seed volume was given');
    // a cdrom on virtio-scsi: works on q35 and pc alike, and with kernels that
    // have no AHCI (Debian's cloud kernel has virtio_scsi + sr_mod, not ahci)
    const bus = 'scsi' as const;
    const prefix = 'sd';
    seed = {
      bus,
      target: targetName(prefix, counters[prefix]++),
      volume: { pool: input.seed.pool, name: input.seed.name, path: input.seed.path },
      createdByVmctl: input.seed.createdByVmctl ?? true,
    };
  }

  const nics: NicSpec[] = t.nics.map((nic, n) => {
    if (nic.type !== 'user') return { ...nic };
    return {
      ...nic,
      forwards: nic.forwards.map((f, i) => {
        if (f.hostPort !== 0) return { ...f };
        const hostPort = input.hostPort?.({ nic: n, forward: i, guestPort: f.guestPort, proto: f.proto });
        if (hostPort === undefined || !Number.isInteger(hostPort) || hostPort < 1 || hostPort > 65535) {
          throw new VmctlError('INTERNAL', `buildVmSpec: no host port picked for forward ${n}/${i} (guest port ${f.guestPort})`);
        }
        return { ...f, hostPort };
      }),
    };
  });

  let cloudInit: VmSpec['cloudInit'];
  if (t.cloudInit) {
    const hostname = t.cloudInit.hostname ?? name;
    if (!HOSTNAME_RE.test(hostname)) throw new VmctlError('INTERNAL', `buildVmSpec: bad hostname ${hostname}`);
    cloudInit = { ...t.cloudInit, hostname };
  }

  const firmware: FirmwareSpec =
    t.firmware === 'bios' ? { type: 'bios' } : { type: 'uefi', ...(input.firmwareLoader ? { loader: input.firmwareLoader } : {}) };

  return {
    name,
    ...(input.uuid !== undefined ? { uuid: input.uuid.toLowerCase() } : {}),
    ...(t.description !== undefined ? { description: t.description } : {}),
    domainType: input.domainType,
    cpus: t.cpus,
    memoryMiB: t.memoryMiB,
    machine: t.machine,
    firmware,
    disks,
    ...(seed ? { seed } : {}),
    nics,
    boot: t.boot,
    graphics: t.graphics,
    serial: t.serial,
    onCrash: t.onCrash,
    watchdog: t.watchdog,
    ...(cloudInit ? { cloudInit } : {}),
    metadata: {
      template: input.template.name,
      ...(image !== undefined ? { image } : {}),
      createdBy: `vmctl ${input.vmctlVersion}`,
      ...(input.createdAt !== undefined ? { createdAt: input.createdAt } : {}),
      ...(t.cloudInit ? { sshUser: t.cloudInit.user } : {}),
    },
  };
}
