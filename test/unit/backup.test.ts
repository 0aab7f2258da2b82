/** Backup set pieces without a daemon: chunk codec and its AAD binding, keys, chains and prune, the restore's domain XML rewrite. */
import { createHash } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeChunk, deriveKeys, encodeChunk, newEncryption, openEncryption, writeSmallPayload } from '../../src/core/backup/chunks.js';
import { toPieces } from '../../src/core/backup/disk-data.js';
import { chainOf, fileDigest, initSet, pointDir, readManifest, readSetInfo, SET_FORMAT, SET_VERSION, type Manifest } from '../../src/core/backup/format.js';
import { pruneSet, verifySet } from '../../src/core/backup/verify.js';
import { rewriteDomainXml } from '../../src/core/backup/restore-xml.js';
import { sshForwardPort, withSshForwardPort } from '../../src/core/vm/domain-xml.js';
import { parseVmctlMetadata } from '../../src/core/vm/domain-xml.js';

const tmp = mkdtempSync(join(tmpdir(), 'vmctl-bak-unit-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('chunk codec', () => {
  const keyFile = join(tmp, 'key');
  writeFileSync(keyFile, Buffer.alloc(32, 3));
  const { params, keys } = newEncryption(keyFile);
  const plain = Buffer.concat([Buffer.alloc(100_000, 0x41), Buffer.from('tail')]);
  const chunk = (stored: Buffer, o = 0) => ({ o, n: plain.length, at: 0, sz: stored.length, sha: '' });

  it('round-trips plain, compressed, encrypted and both', () => {
    for (const codec of [{ compress: false }, { compress: true }, { compress: false, key: keys.data }, { compress: true, key: keys.data }]) {
      const s = encodeChunk(codec, plain, 'p/disks/vda', 3, 4096);
      expect(decodeChunk(codec, s, 'p/disks/vda', 3, chunk(s, 4096)).equals(plain)).toBe(true);
      if (codec.compress) expect(s.length).toBeLessThan(plain.length / 10);
    }
  });

  it('binds a sealed chunk to its file, index and offset (AAD), and detects a flipped bit', () => {
    const codec = { compress: true, key: keys.data };
    const s = encodeChunk(codec, plain, 'p/disks/vda', 3, 4096);
    expect(() => decodeChunk(codec, s, 'p/disks/vdb', 3, chunk(s, 4096))).toThrow(/authentication failed/);
    expect(() => decodeChunk(codec, s, 'p/disks/vda', 4, chunk(s, 4096))).toThrow(/authentication failed/);
    expect(() => decodeChunk(codec, s, 'p/disks/vda', 3, chunk(s, 0))).toThrow(/authentication failed/);
    const bad = Buffer.from(s);
    bad[20]! ^= 1;
    expect(() => decodeChunk(codec, bad, 'p/disks/vda', 3, chunk(bad, 4096))).toThrow(/authentication failed/);
    // two seals of the same bytes differ (fresh nonce each)
    expect(encodeChunk(codec, plain, 'p/disks/vda', 3, 4096).equals(s)).toBe(false);
  });

  it('keys: HKDF from the key file and the set salt; a wrong key is told apart; short key files refused', () => {
    const info = { format: SET_FORMAT, version: SET_VERSION, vm: 'x', createdAt: '', encryption: params } as const;
    expect(openEncryption(info, keyFile, 'D')!.data.equals(keys.data)).toBe(true);
    const other = join(tmp, 'other');
    writeFileSync(other, Buffer.alloc(32, 4));
    expect(() => openEncryption(info, other, 'D')).toThrow(/is not the key of the backup set/);
    expect(() => openEncryption(info, undefined, 'D')).toThrow(/is encrypted/);
    const short = join(tmp, 'short');
    writeFileSync(short, 'hunter2');
    expect(() => deriveKeys(short, params.salt)).toThrow(/at least 32 random bytes/);
  });
});

describe('chains and prune', () => {
  const m = (id: string, parent?: string): Manifest => ({
    format: SET_FORMAT, version: SET_VERSION, id, kind: parent ? 'incremental' : 'full', ...(parent ? { parent } : {}), createdAt: '', vm: { name: 'x', uuid: '', uri: '', state: 'running' },
    consistency: { quiesced: false, how: '' }, compression: 'none', encrypted: false, chunkSize: 4194304, disks: [], snapshots: [], files: [], storedBytes: 0, durationMs: 0,
  });
  const ids = ['20260101T000000000Z-full', '20260102T000000000Z-inc', '20260103T000000000Z-full', '20260104T000000000Z-inc', '20260105T000000000Z-inc'];
  const all = [m(ids[0]!), m(ids[1]!, ids[0]), m(ids[2]!), m(ids[3]!, ids[2]), m(ids[4]!, ids[3])];

  it('a chain goes back to its full point; a missing parent is named', () => {
    const map = new Map(all.map((x) => [x.id, x]));
    expect(chainOf(map, ids[4]!).map((x) => x.id)).toEqual([ids[2], ids[3], ids[4]]);
    map.delete(ids[3]!);
    expect(() => chainOf(map, ids[4]!)).toThrow(new RegExp(`incremental on ${ids[3]}, which is not in the set`));
  });

  it('prune --keep-last never removes a point a kept incremental needs', () => {
    const dir = join(tmp, 'set');
    initSet(dir, { format: SET_FORMAT, version: SET_VERSION, vm: 'x', createdAt: '' });
    for (const x of all) {
      mkdirSync(pointDir(dir, x.id), { recursive: true });
      writeFileSync(join(pointDir(dir, x.id), 'manifest.json'), JSON.stringify(x));
    }
    expect(pruneSet(dir, 1, { dryRun: true })).toMatchObject({ kept: [ids[2], ids[3], ids[4]], removed: [ids[0], ids[1]], keptForChains: [ids[2], ids[3]] });
    // the 4th newest is an incremental on the oldest: nothing goes
    expect(pruneSet(dir, 4, { dryRun: true })).toMatchObject({ kept: ids, removed: [], keptForChains: [ids[0]] });
    const r = pruneSet(dir, 3);
    expect(r.removed).toEqual([ids[0], ids[1]]);
    expect(r.kept).toEqual(ids.slice(2));
    expect(existsSync(pointDir(dir, ids[0]!))).toBe(false);
    expect(existsSync(pointDir(dir, ids[2]!))).toBe(true);
    expect(() => pruneSet(dir, 0)).toThrow(/--keep-last/);
  });
});

describe('restore: the domain definition for another host', () => {
  const xml = `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>web</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
  <metadata>
    <vmctl:vm xmlns:vmctl='https://vmctl.dev/xmlns/vm/1'><vmctl:template>default</vmctl:template><vmctl:ssh-user>vmctl</vmctl:ssh-user>
      <vmctl:volumes><vmctl:volume role='disk' disk='root' pool='vmctl' name='web-root.qcow2' path='/p/web-root.qcow2'/><vmctl:volume role='seed' pool='vmctl' name='web-seed.iso' path='/p/web-seed.iso'/></vmctl:volumes>
      <vmctl:forwards><vmctl:forward nic='0' proto='tcp' host='127.0.0.1' host-port='20001' guest-port='22'/></vmctl:forwards></vmctl:vm>
    <vmctlbak:job xmlns:vmctlbak='https://vmctl.dev/xmlns/backup/1' opId='x' step='begin'/>
  </metadata>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>/p/img_debian-12.vmlinuz</kernel><initrd>/p/img_debian-12.initrd</initrd><cmdline>root=/dev/vda1</cmdline></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/p/web-root.qcow2'/><backingStore type='file'><format type='qcow2'/><source file='/p/img_debian-12.qcow2'/></backingStore><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/p/web-seed.iso'/><target dev='sda' bus='scsi'/><readonly/></disk>
    <interface type='network'><mac address='52:54:00:aa:bb:cc'/><source network='default'/><model type='virtio'/></interface>
  </devices>
  <qemu:commandline><qemu:arg value='-netdev'/><qemu:arg value='user,id=vmctlnet0,hostfwd=tcp:127.0.0.1:20001-:22'/></qemu:commandline>
</domain>`;
  const vols = [
    { role: 'disk' as const, target: 'vda', disk: 'root', pool: 'tank', name: 'copy-root.qcow2', path: '/t/copy-root.qcow2' },
    { role: 'seed' as const, pool: 'tank', name: 'copy-seed.iso', path: '/t/copy-seed.iso' },
    { role: 'kernel' as const, pool: 'tank', name: 'copy-boot.vmlinuz', path: '/t/copy-boot.vmlinuz' },
    { role: 'initrd' as const, pool: 'tank', name: 'copy-boot.initrd', path: '/t/copy-boot.initrd' },
  ];

  it('renames, gives a fresh identity, points at the flat volumes, moves the SSH forward, rewrites vmctl metadata, drops intent records', () => {
    expect(sshForwardPort(xml)).toBe(20001);
    // the one parser of vmctl's SSH forward (migration, restore): only that forward's port moves, not another forward's, not a port that merely starts the same
    expect(withSshForwardPort('user,id=n,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:20001-:22', 20001, 3)).toBe('user,id=n,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:3-:22');
    expect(withSshForwardPort('user,hostfwd=tcp:127.0.0.1:200011-:22', 20001, 3)).toBe('user,hostfwd=tcp:127.0.0.1:200011-:22');
    expect(withSshForwardPort('user,hostfwd=tcp::20001-:221', 20001, 3)).toBe('user,hostfwd=tcp::20001-:221');
    expect(sshForwardPort('user,hostfwd=tcp::20001-:2200')).toBeUndefined();
    expect(sshForwardPort('user,hostfwd=tcp::8080-:80,hostfwd=tcp::2222-:22')).toBe(2222);
    const out = rewriteDomainXml(xml, { name: 'copy', freshIdentity: true, volumes: vols, network: 'lab', sshPort: { from: 20001, to: 24242 } });
    expect(out).toContain('<name>copy</name>');
    expect(out).not.toContain('<uuid>');
    expect(out).not.toContain('52:54:00:aa:bb:cc');
    expect(out).toContain(`<source network="lab"`);
    expect(out).toContain(`<source file="/t/copy-root.qcow2"`);
    expect(out).not.toContain('backingStore');
    expect(out).toContain(`<source file="/t/copy-seed.iso"`);
    expect(out).toContain('<kernel>/t/copy-boot.vmlinuz</kernel>');
    expect(out).toContain('hostfwd=tcp:127.0.0.1:24242-:22');
    expect(out).not.toContain('vmctlbak');
    const meta = parseVmctlMetadata(out)!;
    expect(meta.volumes.map((v) => `${v.pool}/${v.name}`)).toEqual(['tank/copy-root.qcow2', 'tank/copy-seed.iso', 'tank/copy-boot.vmlinuz', 'tank/copy-boot.initrd']);
    expect(meta.forwards[0]!.hostPort).toBe(24242);
    expect(meta.sshUser).toBe('vmctl');
    const same = rewriteDomainXml(xml, { name: 'web', freshIdentity: false, volumes: vols });
    expect(same).toContain('<uuid>11111111-2222-3333-4444-555555555555</uuid>');
    expect(same).toContain('52:54:00:aa:bb:cc');
  });
});

describe('set format versions (v2: file digest over the chunk list; v1 sets still read)', () => {
  const point = '20260201T000000000Z-full';
  let n = 0;
  const makeSet = async (version: number): Promise<string> => {
    const dir = join(tmp, `v${version}-set${n++}`);
    initSet(dir, { format: SET_FORMAT, version, vm: 'x', createdAt: '' });
    const pd = pointDir(dir, point);
    mkdirSync(pd, { recursive: true });
    const data = Buffer.concat([Buffer.alloc(3000, 1), Buffer.alloc(3000, 2), Buffer.from('end')]);
    const f = await writeSmallPayload(join(pd, 'domain.xml'), 'domain.xml', `${point}/domain.xml`, { compress: false }, 'domain', data, 1024, version);
    const man: Manifest = {
      format: SET_FORMAT, version, id: point, kind: 'full', createdAt: '', vm: { name: 'x', uuid: '', uri: '', state: 'running' },
      consistency: { quiesced: false, how: '' }, compression: 'none', encrypted: false, chunkSize: 1024, disks: [], snapshots: [], files: [f], storedBytes: f.stored, durationMs: 0,
    };
    writeFileSync(join(pd, 'manifest.json'), JSON.stringify(man));
    return dir;
  };

  it('v2 writes the chunk-list digest, v1 the whole file\'s SHA-256; both verify', async () => {
    const v2 = await makeSet(2);
    const v1 = await makeSet(1);
    const m2 = readManifest(v2, point);
    const m1 = readManifest(v1, point);
    expect(m2.files[0]!.sha256).toBe(fileDigest(m2.files[0]!.chunks));
    expect(m1.files[0]!.sha256).toBe(createHash('sha256').update(readFileSync(join(pointDir(v1, point), 'domain.xml'))).digest('hex'));
    expect((await verifySet(v2)).ok).toBe(true);
    expect((await verifySet(v1)).ok).toBe(true);
  });

  it('v2: an altered chunk list or a flipped byte is refused with file and offset', async () => {
    const dir = await makeSet(2);
    const mp = join(pointDir(dir, point), 'manifest.json');
    const m = JSON.parse(readFileSync(mp, 'utf8')) as Manifest;
    m.files[0]!.chunks[1]!.o += 1;
    writeFileSync(mp, JSON.stringify(m));
    expect((await verifySet(dir)).problems.map((p) => p.problem).join('; ')).toMatch(/chunk list checksum mismatch/);
    const dir2 = await makeSet(2);
    const file = join(pointDir(dir2, point), 'domain.xml');
    const b = readFileSync(file);
    b[2500] = b[2500]! ^ 1;
    writeFileSync(file, b);
    const r = await verifySet(dir2);
    expect(r.ok).toBe(false);
    expect(r.problems[0]).toMatchObject({ file, offset: 2048 });
  });

  it('a set of an unknown version is refused clearly', () => {
    const dir = join(tmp, 'v9-set');
    initSet(dir, { format: SET_FORMAT, version: 9, vm: 'x', createdAt: '' });
    expect(() => readSetInfo(dir)).toThrow(/version 9 backup set; this vmctl reads versions 1 and 2/);
  });

  it('extents of one grid cell, scattered in the file, make one chunk; cells and gaps split', () => {
    const M = 1024 * 1024;
    const p = toPieces([
      { start: 0, end: M, at: 10 * M },
      { start: M, end: 2 * M, at: 5 * M },
      { start: 2 * M, end: 3 * M, at: 6 * M },
      { start: 3 * M, end: 6 * M, at: 20 * M },
      { start: 7 * M, end: 8 * M },
    ]);
    expect(p).toEqual([
      { o: 0, n: 4 * M, parts: [{ off: 0, n: M, at: 10 * M }, { off: M, n: 2 * M, at: 5 * M }, { off: 3 * M, n: M, at: 20 * M }] },
      { o: 4 * M, n: 2 * M, parts: [{ off: 0, n: 2 * M, at: 21 * M }] },
      { o: 7 * M, n: M, parts: [{ off: 0, n: M }] },
    ]);
  });
});
