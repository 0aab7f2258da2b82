import { describe, expect, it } from 'vitest';
import { VmctlError } from '../../../src/core/errors.js';
import { validateTemplate } from '../../../src/core/template/validate.js';
import { buildVmSpec, chooseDomainType, planDiskVolumes, type ResolvedTemplate } from '../../../src/core/template/model.js';

function template(doc: Record<string, unknown>, name = 't'): ResolvedTemplate {
  const r = validateTemplate(doc);
  if (!r.ok) throw new Error(r.problems.map((p) => p.message).join('; '));
  return { name, files: [`${name}.yaml`], spec: r.value };
}

const vol = (disk: string) => ({ disk, pool: 'default', name: `vm-${disk}.qcow2`, path: `/var/lib/libvirt/images/vm-${disk}.qcow2` });
const seed = { pool: 'default', name: 'vm-seed.iso', path: '/var/lib/libvirt/images/vm-seed.iso' };

describe('chooseDomainType', () => {
  it('auto uses KVM when usable, else TCG with a warning', () => {
    expect(chooseDomainType('auto', true)).toEqual({ domainType: 'kvm' });
    expect(chooseDomainType('auto', false).domainType).toBe('qemu');
    expect(chooseDomainType('auto', false).warning).toMatch(/TCG/);
    expect(chooseDomainType('tcg', true)).toEqual({ domainType: 'qemu' });
  });
  it('kvm insists', () => {
    expect(chooseDomainType('kvm', true)).toEqual({ domainType: 'kvm' });
    const err = (() => {
      try {
        chooseDomainType('kvm', false);
      } catch (e) {
        return e as VmctlError;
      }
    })();
    expect(err?.code).toBe('UNSUPPORTED');
  });
});

describe('planDiskVolumes', () => {
  it('the first disk overlays the VM image, others their own or none', () => {
    const t = template({
      image: 'debian-12',
      disks: [
        { name: 'root', size: 4 },
        { name: 'data', size: 1, format: 'raw' },
        { name: 'tools', size: 1, image: 'tools-img' },
      ],
    });
    expect(planDiskVolumes(t.spec)).toEqual([
      { disk: 'root', sizeBytes: 4 * 1024 ** 3, format: 'qcow2', backingImage: 'debian-12' },
      { disk: 'data', sizeBytes: 1024 ** 3, format: 'raw' },
      { disk: 'tools', sizeBytes: 1024 ** 3, format: 'qcow2', backingImage: 'tools-img' },
    ]);
    expect(planDiskVolumes(t.spec, 'alpine')[0]!.backingImage).toBe('alpine');
  });
});

describe('buildVmSpec', () => {
  it('assigns targets per bus and puts the seed on virtio-scsi', () => {
    const t = template({
      cloudInit: {},
      disks: [
        { name: 'root', size: 4 },
        { name: 'b', size: 1, bus: 'sata' },
        { name: 'c', size: 1, bus: 'scsi' },
        { name: 'd', size: 1 },
      ],
    });
    const spec = buildVmSpec({
      name: 'web',
      template: t,
      domainType: 'qemu',
      volumes: ['root', 'b', 'c', 'd'].map(vol),
      seed,
      hostPort: () => 40022,
      vmctlVersion: '1.2.3',
    });
    expect(spec.disks.map((d) => d.target)).toEqual(['vda', 'sda', 'sdb', 'vdb']);
    expect(spec.seed).toEqual({ bus: 'scsi', target: 'sdc', volume: seed, createdByVmctl: true });
    expect(spec.cloudInit?.hostname).toBe('web');
    expect(spec.metadata).toEqual({ template: 't', createdBy: 'vmctl 1.2.3', sshUser: 'vmctl' });
    expect(spec.nics).toEqual([{ type: 'user', model: 'virtio', forwards: [{ host: '127.0.0.1', hostPort: 40022, guestPort: 22, proto: 'tcp' }] }]);
  });

  it('machine pc: the seed is a virtio-scsi cdrom too (kernels without AHCI/IDE still see it)', () => {
    const t = template({ machine: 'pc', cloudInit: {}, disks: [{ name: 'root', size: 4, bus: 'ide' }] });
    const spec = buildVmSpec({ name: 'web', template: t, domainType: 'qemu', volumes: [vol('root')], seed, hostPort: () => 2000, vmctlVersion: 'x' });
    expect(spec.disks[0]!.target).toBe('hda');
    expect(spec.seed?.target).toBe('sda');
    expect(spec.seed?.bus).toBe('scsi');
  });

  it('caller mistakes are INTERNAL errors', () => {
    const t = template({ cloudInit: {} });
    const base = { name: 'web', template: t, domainType: 'qemu' as const, vmctlVersion: 'x', hostPort: () => 2000 };
    expect(() => buildVmSpec({ ...base, volumes: [] })).toThrow(/1 disks/);
    expect(() => buildVmSpec({ ...base, volumes: [vol('other')] })).toThrow(/expected "root"/);
    expect(() => buildVmSpec({ ...base, volumes: [vol('root')] })).toThrow(/no seed volume/);
    expect(() => buildVmSpec({ ...base, volumes: [vol('root')], seed, hostPort: () => 0 })).toThrow(/no host port/);
    expect(() => buildVmSpec({ ...base, name: "a'b", volumes: [vol('root')], seed })).toThrow(/invalid VM name/);
    expect(() => buildVmSpec({ ...base, uuid: 'nope', volumes: [vol('root')], seed })).toThrow(/invalid UUID/);
  });

  it('uefi firmware: autoselection unless a loader is given', () => {
    const t = template({ firmware: 'uefi' });
    const base = { name: 'web', template: t, domainType: 'kvm' as const, volumes: [vol('root')], hostPort: () => 2000, vmctlVersion: 'x' };
    expect(buildVmSpec(base).firmware).toEqual({ type: 'uefi' });
    const loader = { path: '/usr/share/OVMF/OVMF_CODE_4M.fd', nvramTemplate: '/usr/share/OVMF/OVMF_VARS_4M.fd' };
    expect(buildVmSpec({ ...base, firmwareLoader: loader }).firmware).toEqual({ type: 'uefi', loader });
  });
});
