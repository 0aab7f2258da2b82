/** Pure parts of vmctl migrate: guest facts, XML rewrites, the journal, the post-copy decision. */
import { describe, expect, it } from 'vitest';
import { guestFacts, rewriteDomainXml } from '../../src/core/migrate/facts.js';
import { parseJournal, rewriteSnapshotXml } from '../../src/core/migrate/snapshots.js';
import { postcopyReason, type JobSample } from '../../src/core/migrate/worker.js';
import { diskPathMap } from '../../src/core/migrate/recover.js';

const dom = `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>web</name><uuid>0b3c2f4e-1111-2222-3333-444455556666</uuid>
  <memory unit='KiB'>131072</memory>
  <metadata>
    <vmctlop:op xmlns:vmctlop="https://vmctl.dev/xmlns/op/1" op="migrate" opId="x" step="migrating" since="s" updated="u" user="root" host="h" pid="1"/>
    <vmctlmig:migration xmlns:vmctlmig="https://vmctl.dev/xmlns/migrate/1" from="qemu:///system" to="qemu+tcp://b/system" keepSource="no">
      <vmctlmig:snapshot name="s1" current="yes">${Buffer.from('<domainsnapshot><name>s1</name></domainsnapshot>').toString('base64')}</vmctlmig:snapshot>
    </vmctlmig:migration>
  </metadata>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type></os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/a/web.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='sda' bus='scsi'/><readonly/></disk>
    <interface type='network'><source network='default'/></interface>
  </devices>
  <qemu:commandline><qemu:arg value='-netdev'/><qemu:arg value='user,id=vmctlnet0,hostfwd=tcp:127.0.0.1:24022-:22'/></qemu:commandline>
</domain>`;

describe('migrate facts and rewrites', () => {
  it('reads disks, networks, CPU, memory and the SSH forward port', () => {
    const f = guestFacts(dom);
    expect(f).toMatchObject({ name: 'web', domainType: 'qemu', arch: 'x86_64', memoryKiB: 131072, networks: ['default'], sshPort: 24022, cpuMode: 'custom' });
    expect(f.disks.map((d) => [d.target, d.path, d.format])).toEqual([['vda', '/a/web.qcow2', 'qcow2'], ['sda', '', 'raw']]);
    expect(f.cpuXml).toContain('qemu64');
  });

  it('rewrites disk paths, the forward port and the domain type (and nothing else)', () => {
    const x = rewriteDomainXml(dom, { diskPaths: new Map([['/a/web.qcow2', '/b/web.qcow2']]), sshPort: { from: 24022, to: 25000 }, domainType: 'kvm' });
    const f = guestFacts(x);
    expect(f.disks[0]!.path).toBe('/b/web.qcow2');
    expect(f.sshPort).toBe(25000);
    expect(f.domainType).toBe('kvm');
    expect(f.networks).toEqual(['default']);
    expect(diskPathMap(dom, x)).toEqual(new Map([['/a/web.qcow2', '/b/web.qcow2']]));
  });

  it("moves a direct-kernel boot's kernel/initrd to the VM's own volumes there and records them in vmctl's metadata", () => {
    const vm = dom
      .replace('<metadata>', `<metadata><vmctl:vm xmlns:vmctl="https://vmctl.dev/xmlns/vm/1"><vmctl:template>default</vmctl:template><vmctl:volumes><vmctl:volume role="disk" disk="root" pool="vmctl" name="web-root.qcow2" path="/a/web.qcow2"/></vmctl:volumes></vmctl:vm>`)
      .replace('</type></os>', '</type><kernel>/a/img_d.vmlinuz</kernel><initrd>/a/img_d.initrd</initrd><cmdline>root=/dev/vda</cmdline></os>');
    expect(guestFacts(vm).vmctlVolumes).toEqual([{ role: 'disk', disk: 'root', pool: 'vmctl', name: 'web-root.qcow2', path: '/a/web.qcow2' }]);
    expect(guestFacts(dom).vmctlVolumes).toBeUndefined();
    const x = rewriteDomainXml(vm, {
      diskPaths: new Map([['/a/img_d.vmlinuz', '/b/web-boot.vmlinuz'], ['/a/img_d.initrd', '/b/web-boot.initrd']]),
      addVolumes: [
        { disk: 'kernel', pool: 'vmctl', name: 'web-boot.vmlinuz', path: '/b/web-boot.vmlinuz' },
        { disk: 'initrd', pool: 'vmctl', name: 'web-boot.initrd', path: '/b/web-boot.initrd' },
      ],
    });
    const f = guestFacts(x);
    expect(f.bootFiles).toEqual([{ what: 'kernel', path: '/b/web-boot.vmlinuz' }, { what: 'initrd', path: '/b/web-boot.initrd' }]);
    expect(f.vmctlVolumes?.map((v) => [v.disk, v.name])).toEqual([['root', 'web-root.qcow2'], ['kernel', 'web-boot.vmlinuz'], ['initrd', 'web-boot.initrd']]);
    expect(x).toContain('root=/dev/vda');
  });

  it('reads the journal back from the domain metadata', () => {
    expect(parseJournal(dom)).toEqual({ from: 'qemu:///system', to: 'qemu+tcp://b/system', keepSource: false, snapshots: [{ name: 's1', current: true, xml: '<domainsnapshot><name>s1</name></domainsnapshot>' }] });
    expect(parseJournal('<domain><name>x</name></domain>')).toBeNull();
    // --copy-storage to a host without vmctl's pool: the journal says vmctl makes it (rolled back with the volumes)
    const withPool = dom.replace('keepSource="no"', 'keepSource="no" makesPool="yes"');
    expect(withPool).not.toBe(dom);
    expect(parseJournal(withPool)?.makesPool).toBe(true);
    expect(parseJournal(dom)?.makesPool).toBeUndefined();
    const withVolumes = dom.replace(
      '</vmctlmig:migration>',
      '<vmctlmig:volume pool="vmctl" name="web-root.qcow2"/><vmctlmig:volume pool="vmctl" name="web-seed.iso"/><vmctlmig:source-copy path="/a/web.qcow2"/></vmctlmig:migration>',
    );
    expect(parseJournal(withVolumes)).toMatchObject({
      made: [{ pool: 'vmctl', name: 'web-root.qcow2' }, { pool: 'vmctl', name: 'web-seed.iso' }],
      sourceCopies: ['/a/web.qcow2'],
    });
  });

  it("rewrites a snapshot's disk paths", () => {
    const snap = `<domainsnapshot><name>s</name><disks><disk name='vda' snapshot='internal'><source file='/a/web.qcow2'/></disk></disks>${dom.replace(/<metadata>[\s\S]*<\/metadata>/, '')}</domainsnapshot>`;
    const out = rewriteSnapshotXml(snap, new Map([['/a/web.qcow2', '/b/web.qcow2']]));
    expect(out).not.toContain('/a/web.qcow2');
    expect(guestFacts(out).disks[0]!.path).toBe('/b/web.qcow2');
  });
});

describe('post-copy decision', () => {
  const s = (atMs: number, o: Partial<JobSample>): JobSample => ({
    atMs, elapsedMs: atMs, memoryTotal: 1e9, memoryRemaining: 5e8, memoryProcessed: 0, diskTotal: 0, diskRemaining: 0, dataTotal: 1e9, dataProcessed: 0, dataRemaining: 5e8, bps: 4e6, dirtyBps: 0, iteration: 1, postcopyRequests: 0, ...o,
  });
  it('waits for the first pass and the time given, then switches when the guest dirties memory as fast as the link', () => {
    expect(postcopyReason({ afterS: 5 }, [s(6000, { iteration: 1, dirtyBps: 9e6 })])).toBeNull();
    expect(postcopyReason({ afterS: 5 }, [s(3000, { iteration: 3, dirtyBps: 9e6 })])).toBeNull();
    expect(postcopyReason({ afterS: 5 }, [s(6000, { iteration: 3, dirtyBps: 9e6 })])).toMatch(/not converging after 5 s/);
    expect(postcopyReason({ always: true }, [s(100, { iteration: 2 })])).toMatch(/first pre-copy pass/);
  });
  it('also when what remains stopped shrinking; not while it converges', () => {
    const flat = [s(1000, { iteration: 2, memoryRemaining: 4e8 }), s(6000, { iteration: 4, memoryRemaining: 3.9e8 })];
    expect(postcopyReason({ afterS: 5 }, flat)).toMatch(/still to send/);
    const shrinking = [s(1000, { iteration: 2, memoryRemaining: 4e8 }), s(6000, { iteration: 4, memoryRemaining: 1e7 })];
    expect(postcopyReason({ afterS: 5 }, shrinking)).toBeNull();
  });
});
