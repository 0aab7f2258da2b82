/** Snapshot XML in and out, the kind vmctl picks, the file record, rewriting disk sources. */
import { describe, expect, it } from 'vitest';
import { XMLParser } from 'fast-xml-parser';
import { buildSnapshotXml, parseSnapshotFiles, parseSnapshotSummary, parseSnapshotXml, SNAP_XMLNS } from '../../../src/core/snapshot/model.js';
import { chooseKind } from '../../../src/core/snapshot/create.js';
import { domainDisks, snapshotableDisks, withDiskSources } from '../../../src/core/snapshot/disks.js';

const DOMAIN = `<domain type='qemu'>
  <name>a</name>
  <metadata><vmctlsnap:files xmlns:vmctlsnap="${SNAP_XMLNS}"><vmctlsnap:file path="/p/a-vda.s1.qcow2" role="overlay" snapshot="s1"/><vmctlsnap:file path="/p/a.s1.mem" role="memory" snapshot="s1"/></vmctlsnap:files></metadata>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/p/a-root.qcow2'/><backingStore type='file'><format type='qcow2'/><source file='/p/img.qcow2'/></backingStore><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/p/a-seed.iso'/><target dev='sda' bus='scsi'/><readonly/></disk>
  </devices>
</domain>`;

describe('snapshot XML', () => {
  it('asks for an external snapshot with memory, the seed left out', () => {
    const xml = buildSnapshotXml({
      name: 's1',
      description: 'before <upgrade> & "reboot"',
      kind: 'external',
      memory: true,
      memoryFile: '/p/a.s1.mem',
      disks: [
        { name: 'vda', mode: 'external', overlay: '/p/a-vda.s1.qcow2' },
        { name: 'sda', mode: 'no' },
      ],
    });
    const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@_' }).parse(xml) as { domainsnapshot: Record<string, unknown> };
    expect(doc.domainsnapshot.description).toBe('before <upgrade> & "reboot"');
    expect(doc.domainsnapshot.memory).toEqual({ '@_snapshot': 'external', '@_file': '/p/a.s1.mem' });
    expect(doc.domainsnapshot.disks).toEqual({
      disk: [
        { '@_name': 'vda', '@_snapshot': 'external', source: { '@_file': '/p/a-vda.s1.qcow2' } },
        { '@_name': 'sda', '@_snapshot': 'no' },
      ],
    });
  });

  it('reads back what libvirt says: kind, memory, each disk\'s overlay and layer, parent', () => {
    const xml = `<domainsnapshot><name>s2</name><state>running</state><parent><name>s1</name></parent><creationTime>1796161686</creationTime>
      <memory snapshot='external' file='/p/a.s2.mem'/>
      <disks><disk name='vda' snapshot='external' type='file'><driver type='qcow2'/><source file='/p/a-vda.s2.qcow2'/></disk><disk name='sda' snapshot='no'/></disks>
      ${DOMAIN}</domainsnapshot>`;
    const s = parseSnapshotXml(xml);
    expect(s).toMatchObject({
      name: 's2',
      state: 'running',
      parent: 's1',
      kind: 'external',
      memory: 'external',
      memoryFile: '/p/a.s2.mem',
      createdAt: '2026-12-01T21:48:06.000Z',
      disks: [
        { name: 'vda', snapshot: 'external', overlay: '/p/a-vda.s2.qcow2', base: '/p/a-root.qcow2' },
        { name: 'sda', snapshot: 'no' },
      ],
    });
    expect(s.domainXml?.startsWith('<domain ')).toBe(true);
    // the summary create reads of every snapshot: the same name and kind, the domains inside left unparsed
    expect(parseSnapshotSummary(xml)).toEqual({ name: 's2', kind: 'external' });
    const internal = `<domainsnapshot><name>i1</name><state>running</state><memory snapshot='internal'/><disks><disk name='vda' snapshot='internal'/><disk name='sda' snapshot='no'/></disks>${DOMAIN}<inactiveDomain>${DOMAIN.replace(/^<domain/, '<domain').replace(/<\/domain>$/, '</domain>')}</inactiveDomain><cookie><cpu mode='custom'/></cookie></domainsnapshot>`;
    expect(parseSnapshotSummary(internal)).toEqual({ name: 'i1', kind: 'internal' });
    expect(parseSnapshotXml(internal).kind).toBe('internal');
    // a disk-only snapshot (no memory element) of one external disk
    expect(parseSnapshotSummary(`<domainsnapshot><name>d</name><disks><disk name='vda' snapshot='external'><source file='/p/x'/></disk></disks>${DOMAIN}</domainsnapshot>`)).toEqual({ name: 'd', kind: 'external' });
    expect(parseSnapshotXml(`<domainsnapshot><name>i</name><memory snapshot='internal'/><disks><disk name='vda' snapshot='internal'/></disks></domainsnapshot>`).kind).toBe('internal');
  });
});

describe('the kind vmctl picks, and why', () => {
  const base = { running: true, diskOnly: false, noMemory: false, uefi: false, hasExternal: false };
  it('internal with memory by default, internal without it when stopped', () => {
    expect(chooseKind(base)).toEqual({ kind: 'internal', memory: true });
    expect(chooseKind({ ...base, running: false })).toEqual({ kind: 'internal', memory: false });
  });
  it('external where internal cannot be, saying why', () => {
    expect(chooseKind({ ...base, diskOnly: true })).toMatchObject({ kind: 'external', memory: false, why: expect.stringContaining('--disk-only') });
    expect(chooseKind({ ...base, noMemory: true })).toMatchObject({ kind: 'external', memory: false, why: expect.stringContaining('--no-memory') });
    expect(chooseKind({ ...base, uefi: true })).toMatchObject({ kind: 'external', memory: true, why: expect.stringContaining('UEFI') });
    expect(chooseKind({ ...base, rawDisk: 'vdb' })).toMatchObject({ kind: 'external', why: expect.stringContaining('vdb is raw') });
    expect(chooseKind({ ...base, hasExternal: true })).toMatchObject({ kind: 'external', memory: true, why: expect.stringContaining('already has external') });
  });
});

describe('disks and the file record', () => {
  it('finds the writable disks and vmctl\'s recorded files', () => {
    expect(domainDisks(DOMAIN).map((d) => [d.target, d.device, d.readonly])).toEqual([
      ['vda', 'disk', false],
      ['sda', 'cdrom', true],
    ]);
    expect(snapshotableDisks(DOMAIN).map((d) => d.target)).toEqual(['vda']);
    expect(parseSnapshotFiles(DOMAIN)).toEqual([
      { path: '/p/a-vda.s1.qcow2', role: 'overlay', snapshot: 's1' },
      { path: '/p/a.s1.mem', role: 'memory', snapshot: 's1' },
    ]);
    expect(parseSnapshotFiles('<domain><metadata><x:files xmlns:x="https://example.com/other"><x:file path="/etc/passwd" role="overlay"/></x:files></metadata></domain>')).toEqual([]);
  });
  it('moves a disk onto a new source and drops its old backing chain, nothing else', () => {
    const out = withDiskSources(DOMAIN, new Map([['vda', '/p/a-vda.s1.r1.qcow2']]));
    expect(domainDisks(out).map((d) => d.source)).toEqual(['/p/a-vda.s1.r1.qcow2', '/p/a-seed.iso']);
    expect(out).not.toContain('/p/img.qcow2');
    expect(out).toContain(SNAP_XMLNS);
    expect(() => withDiskSources(DOMAIN, new Map([['vdz', '/x']]))).toThrow();
  });
});
