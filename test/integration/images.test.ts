/**
 * Images in vmctl's pool against the real daemons: the main libvirtd (qemu:///system) and the
 * rig's second libvirtd over TCP (the "remote host" path: every byte goes through volume
 * streams). Sources are small qcow2/raw files made here with qemu-img; ensureImage() imports the
 * real debian-12 build from a test build cache (.cache/vmctl-test, symlinks into .cache/images;
 * built once with scripts/build-image.sh if missing). Every image and volume name carries this
 * run's tag and everything is removed afterwards.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync, copyFileSync, unlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLBuilder } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection } from '../../src/libvirt/connection.js';
import { ensurePool } from '../../src/core/storage/pool.js';
import { VmctlError } from '../../src/core/errors.js';
import {
  buildImage,
  buildImageFiles,
  ensureImage,
  getImage,
  importImage,
  listImages,
  removeImage,
  type ImageInfo,
  type ImageProgress,
} from '../../src/core/image/images.js';
import { builtImagePath } from '../../src/core/paths.js';
import { ensureRig, repoRoot, type RigEnv } from '../_helpers/rig.js';
import { tinyDomainXml } from '../_helpers/tiny-domain.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';

const tag = `t${process.pid.toString(36)}${Date.now().toString(36).slice(-5)}`;
const imageName = (s: string) => `it-${tag}-${s}`;
const LOCAL = 'qemu:///system';

const xml = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', suppressEmptyNode: true });

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function qemuImgInfo(path: string): { 'virtual-size': number; format: string } {
  return JSON.parse(execFileSync('qemu-img', ['info', '--output=json', path], { encoding: 'utf8' })) as { 'virtual-size': number; format: string };
}

async function downloadVolume(conn: Connection, volName: string): Promise<Buffer> {
  const { pool } = await ensurePool(conn);
  const vol = await pool.lookupVolume(volName);
  const stream = await vol.download();
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  await stream.done;
  return Buffer.concat(chunks);
}

async function poolVolumeNames(conn: Connection): Promise<string[]> {
  const { pool } = await ensurePool(conn);
  await pool.refresh().catch(() => undefined);
  return (await pool.listVolumes()).map((v) => v.name);
}

async function volumesOf(conn: Connection, name: string): Promise<string[]> {
  return (await poolVolumeNames(conn)).filter((v) => v.startsWith(`img_${name}.`));
}

async function expectVmctlError(p: Promise<unknown>, code: string, re?: RegExp): Promise<VmctlError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, `expected a VmctlError ${code}`).toBeInstanceOf(VmctlError);
  const e = err as VmctlError;
  expect(e.code, e.message).toBe(code);
  if (re) expect(e.oneLine()).toMatch(re);
  return e;
}

function overlayXml(volName: string, capacity: number, backingPath: string): string {
  return xml.build({
    volume: {
      name: volName,
      capacity: { '@_unit': 'bytes', '#text': String(capacity) },
      target: { format: { '@_type': 'qcow2' } },
      backingStore: { path: backingPath, format: { '@_type': 'qcow2' } },
    },
  }) as string;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createNetServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

describe('images', () => {
  let rig: RigEnv;
  const conns: Record<'local' | 'rig', Connection | undefined> = { local: undefined, rig: undefined };
  const conn = (t: 'local' | 'rig'): Connection => conns[t]!;
  let work: string;
  let qcow2: string; // 64 MiB virtual, a few MiB of patterns
  let raw: string; // 3 MiB random
  let overlayFile: string; // qcow2 with a backing file
  let dkDir: string; // direct-kernel set: dk.qcow2 + .vmlinuz + .initrd + .json
  let http: Server;
  let httpBase: string;
  let httpRequests: string[];
  const testCache = join(repoRoot, '.cache', 'vmctl-test');
  const savedCacheDir = process.env.VMCTL_CACHE_DIR;
  const cacheLinks: string[] = [];

  beforeAll(async () => {
    ensureBuilt();
    rig = await ensureRig();
    conns.local = await Connection.open(LOCAL);
    conns.rig = await Connection.open(rig.tcpUri);

    work = mkdtempSync(join(tmpdir(), 'vmctl-images-'));
    qcow2 = join(work, 'small.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '64M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 0 1M', '-c', 'write -P 0x5c 40M 2M', qcow2], { stdio: 'ignore' });
    raw = join(work, 'small.raw');
    writeFileSync(raw, randomBytes(3 * 1024 * 1024));
    overlayFile = join(work, 'overlay.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', qcow2, '-F', 'qcow2', overlayFile]);

    dkDir = join(work, 'dk');
    mkdirSync(dkDir);
    const dk = join(dkDir, 'dk.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', dk, '32M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 512k', dk], { stdio: 'ignore' });
    copyFileSync(rig.tinyKernel, `${dk}.vmlinuz`);
    copyFileSync(rig.tinyInitrd, `${dk}.initrd`);
    writeFileSync(
      `${dk}.json`,
      JSON.stringify({
        manifestVersion: 1,
        name: 'dk',
        format: 'qcow2',
        image: 'dk.qcow2',
        virtualSize: 32 * 1024 * 1024,
        fileSize: statSync(dk).size,
        sha256: sha256File(dk),
        boot: {
          method: 'direct-kernel',
          kernel: 'dk.qcow2.vmlinuz',
          kernelSha256: sha256File(`${dk}.vmlinuz`),
          initrd: 'dk.qcow2.initrd',
          initrdSha256: sha256File(`${dk}.initrd`),
          cmdline: 'console=ttyS0 quiet',
        },
        guest: { defaultUser: 'tiny' },
      }),
    );

    httpRequests = [];
    http = createServer((req, res) => {
      httpRequests.push(req.url ?? '');
      const m = /^\/files\/([A-Za-z0-9._-]+)$/.exec(req.url ?? '');
      const file = m ? [join(work, m[1]!), join(dkDir, m[1]!)].find((f) => existsSync(f) && statSync(f).isFile()) : undefined;
      if (!file) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found\n');
        return;
      }
      res.writeHead(200, { 'content-length': String(statSync(file).size), 'content-type': 'application/octet-stream' });
      createReadStream(file).pipe(res);
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const addr = http.address();
    httpBase = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/files`;

    // the test build cache: the real debian-12 build (built once if missing), under this run's names too
    // built by test/_helpers/global-setup.ts before any test runs
    const built = join(repoRoot, '.cache', 'images', 'debian-12.qcow2');
    if (!existsSync(`${built}.json`)) throw new Error(`${built} is missing: the vitest global setup builds it`);
    mkdirSync(join(testCache, 'images'), { recursive: true });
    for (const suffix of ['', '.json', '.vmlinuz', '.initrd']) {
      const link = join(testCache, 'images', `debian-12.qcow2${suffix}`);
      if (!existsSync(link)) {
        rmSync(link, { force: true });
        symlinkSync(`${built}${suffix}`, link);
      }
    }
    for (const suffix of ['', '.json']) {
      const link = join(testCache, 'images', `${imageName('deb')}.qcow2${suffix}`);
      symlinkSync(`${built}${suffix}`, link);
      cacheLinks.push(link);
    }
    process.env.VMCTL_CACHE_DIR = testCache;
  }, 1_300_000);

  afterAll(async () => {
    if (savedCacheDir === undefined) delete process.env.VMCTL_CACHE_DIR;
    else process.env.VMCTL_CACHE_DIR = savedCacheDir;
    for (const l of cacheLinks) rmSync(l, { force: true });
    for (const c of [conns.local, conns.rig]) {
      if (!c) continue;
      try {
        for (const d of await c.listDomains({ active: true, inactive: true })) if (d.name.includes(tag)) await d.undefine().catch(() => undefined);
        const { pool } = await ensurePool(c);
        for (const v of await pool.listVolumes()) if (v.name.includes(tag)) await v.delete().catch(() => undefined);
      } finally {
        await c.close();
      }
    }
    await new Promise<void>((resolve) => (http ? http.close(() => resolve()) : resolve()));
    if (work) rmSync(work, { recursive: true, force: true });
  });

  for (const target of ['local', 'rig'] as const) {
    describe(`on ${target === 'local' ? LOCAL : 'the rig over tcp'}`, () => {
      it('imports a qcow2: listed with the right sizes, bytes come back identical through a download stream', async () => {
        const name = imageName(`q-${target}`);
        const events: ImageProgress[] = [];
        const info = await importImage(conn(target), { source: qcow2, name, onProgress: (p) => events.push(p) });
        expect(info).toMatchObject({ name, format: 'qcow2', complete: true, boot: { method: 'bootloader' }, inUseBy: [], usedByDomains: [] });
        expect(info.volumes).toEqual({ disk: `img_${name}.qcow2`, manifest: `img_${name}.manifest.json` });
        expect(info.sizeBytes).toBe(statSync(qcow2).size);
        expect(info.virtualSizeBytes).toBe(qemuImgInfo(qcow2)['virtual-size']);
        expect(info.imported).toMatchObject({ source: qcow2, sha256: sha256File(qcow2), format: 'qcow2' });

        const listed = (await listImages(conn(target))).find((i) => i.name === name);
        expect(listed).toBeDefined();
        expect(listed!.sizeBytes).toBe(statSync(qcow2).size);
        expect(listed!.virtualSizeBytes).toBe(64 * 1024 * 1024);
        if (target === 'local') {
          // the daemon's file is a real qcow2 qemu-img agrees with
          const onHost = qemuImgInfo(listed!.path);
          expect(onHost.format).toBe('qcow2');
          expect(onHost['virtual-size']).toBe(listed!.virtualSizeBytes);
        }

        const back = await downloadVolume(conn(target), info.volumes.disk);
        expect(back.length).toBe(statSync(qcow2).size);
        expect(back.equals(readFileSync(qcow2))).toBe(true);

        // upload progress: bytes, rate, ETA, a final event with everything done
        const up = events.filter((e) => e.phase === 'upload');
        expect(up.length).toBeGreaterThan(0);
        const last = up[up.length - 1]!;
        expect(last).toMatchObject({ finished: true, done: statSync(qcow2).size, total: statSync(qcow2).size });
        expect(typeof (last as { bytesPerSecond: number }).bytesPerSecond).toBe('number');

        await removeImage(conn(target), name);
        expect(await volumesOf(conn(target), name)).toEqual([]);
      });

      it('imports a raw image byte for byte', async () => {
        const name = imageName(`r-${target}`);
        const info = await importImage(conn(target), { source: raw, name });
        expect(info).toMatchObject({ format: 'raw', sizeBytes: 3 * 1024 * 1024, virtualSizeBytes: 3 * 1024 * 1024 });
        expect(info.volumes.disk).toBe(`img_${name}.raw`);
        expect((await downloadVolume(conn(target), info.volumes.disk)).equals(readFileSync(raw))).toBe(true);
        await removeImage(conn(target), name);
      });

      it('imports kernel, initrd and manifest from a sibling FILE.json', async () => {
        const name = imageName(`dk-${target}`);
        const dk = join(dkDir, 'dk.qcow2');
        const info = await importImage(conn(target), { source: dk, name });
        expect(info.complete).toBe(true);
        expect(info.boot).toEqual({
          method: 'direct-kernel',
          kernelPath: join(info.path, '..', `img_${name}.vmlinuz`),
          initrdPath: join(info.path, '..', `img_${name}.initrd`),
          cmdline: 'console=ttyS0 quiet',
        });
        expect(info.manifest).toMatchObject({ name: 'dk', guest: { defaultUser: 'tiny' } });
        expect(info.manifest).not.toHaveProperty('vmctlImport');
        expect((await downloadVolume(conn(target), `img_${name}.vmlinuz`)).equals(readFileSync(`${dk}.vmlinuz`))).toBe(true);
        expect((await downloadVolume(conn(target), `img_${name}.initrd`)).equals(readFileSync(`${dk}.initrd`))).toBe(true);
        const stored = JSON.parse((await downloadVolume(conn(target), `img_${name}.manifest.json`)).toString('utf8')) as Record<string, unknown>;
        expect(stored).toMatchObject({ manifestVersion: 1, vmctlImport: { name, kernelSha256: sha256File(`${dk}.vmlinuz`) } });
        const removed = await removeImage(conn(target), name);
        expect(removed.removedVolumes.sort()).toEqual([`img_${name}.initrd`, `img_${name}.manifest.json`, `img_${name}.qcow2`, `img_${name}.vmlinuz`]);
        expect(await volumesOf(conn(target), name)).toEqual([]);
      });
    });
  }

  describe('checksums', () => {
    it('accepts the right --sha256 and refuses a wrong one without leaving a volume', async () => {
      const ok = imageName('sha-ok');
      const info = await importImage(conn('local'), { source: qcow2, name: ok, sha256: sha256File(qcow2).toUpperCase() });
      expect(info.imported?.sha256).toBe(sha256File(qcow2));
      await removeImage(conn('local'), ok);

      const bad = imageName('sha-bad');
      const e = await expectVmctlError(importImage(conn('local'), { source: qcow2, name: bad, sha256: '0'.repeat(64) }), 'INVALID_INPUT', /sha256 mismatch/);
      expect(e.details).toMatchObject({ expectedSha256: '0'.repeat(64), actualSha256: sha256File(qcow2) });
      expect(await volumesOf(conn('local'), bad)).toEqual([]);
      await expectVmctlError(importImage(conn('local'), { source: qcow2, name: bad, sha256: 'xyz' }), 'INVALID_INPUT', /64 hexadecimal/);
    });

    it('refuses a sibling manifest whose checksum does not match its kernel', async () => {
      const dir = join(work, 'badkernel');
      mkdirSync(dir);
      const f = join(dir, 'b.qcow2');
      copyFileSync(join(dkDir, 'dk.qcow2'), f);
      copyFileSync(join(dkDir, 'dk.qcow2.initrd'), `${f}.initrd`);
      writeFileSync(`${f}.vmlinuz`, 'not the kernel');
      const m = JSON.parse(readFileSync(join(dkDir, 'dk.qcow2.json'), 'utf8')) as { boot: Record<string, string> };
      m.boot.kernel = 'b.qcow2.vmlinuz';
      m.boot.initrd = 'b.qcow2.initrd';
      writeFileSync(`${f}.json`, JSON.stringify(m));
      const name = imageName('badkernel');
      await expectVmctlError(importImage(conn('local'), { source: f, name }), 'INVALID_INPUT', /sha256 mismatch for the kernel/);
      expect(await volumesOf(conn('local'), name)).toEqual([]);
    });
  });

  describe('URLs', () => {
    it('downloads, verifies and uploads (with the sibling manifest when the server has one)', async () => {
      const name = imageName('url');
      const events: ImageProgress[] = [];
      const info = await importImage(conn('rig'), { source: `${httpBase}/small.qcow2`, name, sha256: sha256File(qcow2), onProgress: (p) => events.push(p) });
      expect(info).toMatchObject({ format: 'qcow2', sizeBytes: statSync(qcow2).size, boot: { method: 'bootloader' } });
      expect(info.imported?.source).toBe(`${httpBase}/small.qcow2`);
      expect(events.some((e) => e.phase === 'download' && e.finished && e.done === statSync(qcow2).size)).toBe(true);
      expect((await downloadVolume(conn('rig'), info.volumes.disk)).equals(readFileSync(qcow2))).toBe(true);
      await removeImage(conn('rig'), name);

      const dkName = imageName('urldk');
      const dk = await importImage(conn('rig'), { source: `${httpBase}/dk.qcow2`, name: dkName });
      expect(dk.boot.method).toBe('direct-kernel');
      expect(httpRequests).toEqual(expect.arrayContaining(['/files/dk.qcow2.json', '/files/dk.qcow2.vmlinuz', '/files/dk.qcow2.initrd']));
      expect((await downloadVolume(conn('rig'), `img_${dkName}.vmlinuz`)).equals(readFileSync(rig.tinyKernel))).toBe(true);
      await removeImage(conn('rig'), dkName);
    });

    it('a wrong --sha256 for a URL leaves neither volumes nor temp files', async () => {
      const name = imageName('urlbad');
      await expectVmctlError(importImage(conn('local'), { source: `${httpBase}/small.raw`, name, sha256: 'a'.repeat(64) }), 'INVALID_INPUT', /sha256 mismatch/);
      expect(await volumesOf(conn('local'), name)).toEqual([]);
      const tmp = join(testCache, 'tmp');
      expect(existsSync(tmp) ? readdirSync(tmp).filter((f) => f.startsWith('import-')) : []).toEqual([]);
    });

    it('turns a 404 and a refused connection into clean errors', async () => {
      const name = imageName('url404');
      await expectVmctlError(importImage(conn('local'), { source: `${httpBase}/missing.qcow2`, name }), 'NOT_FOUND', /HTTP 404/);
      const port = await freePort();
      const e = await expectVmctlError(importImage(conn('local'), { source: `http://127.0.0.1:${port}/x.qcow2`, name }), 'CONNECTION', /ECONNREFUSED/);
      expect(e.message).toContain(`127.0.0.1:${port}`);
      expect(await volumesOf(conn('local'), name)).toEqual([]);
    });
  });

  describe('refusals', () => {
    it('validates names', async () => {
      for (const bad of ["a'b<c>", '../x', '', '.hidden', 'a/b']) {
        await expectVmctlError(importImage(conn('local'), { source: qcow2, name: bad }), 'INVALID_INPUT');
      }
      await expectVmctlError(getImage(conn('local'), '../x'), 'INVALID_INPUT');
      await expectVmctlError(removeImage(conn('local'), "a'b<c>"), 'INVALID_INPUT');
    });

    it('refuses qcow2 overlays, missing files and unsupported sources', async () => {
      const name = imageName('refuse');
      await expectVmctlError(importImage(conn('local'), { source: overlayFile, name }), 'INVALID_INPUT', /backing file.*small\.qcow2/);
      await expectVmctlError(importImage(conn('local'), { source: join(work, 'nope.qcow2'), name }), 'NOT_FOUND');
      await expectVmctlError(importImage(conn('local'), { source: work, name }), 'INVALID_INPUT', /not a regular file/);
      await expectVmctlError(importImage(conn('local'), { source: 'ftp://example.org/x.qcow2', name }), 'INVALID_INPUT');
      const gz = join(work, 'x.qcow2.gz');
      writeFileSync(gz, Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), randomBytes(100)]));
      await expectVmctlError(importImage(conn('local'), { source: gz, name }), 'UNSUPPORTED', /gzip/);
      expect(await volumesOf(conn('local'), name)).toEqual([]);
    });

    it('refuses to overwrite without force, replaces with force', async () => {
      const name = imageName('force');
      await importImage(conn('local'), { source: raw, name });
      await expectVmctlError(importImage(conn('local'), { source: qcow2, name }), 'ALREADY_EXISTS', /--force/);
      const info = await importImage(conn('local'), { source: qcow2, name, force: true });
      expect(info.format).toBe('qcow2');
      expect((await volumesOf(conn('local'), name)).sort()).toEqual([`img_${name}.manifest.json`, `img_${name}.qcow2`]);
      await removeImage(conn('local'), name);
    });

    it('rm (and import --force) are refused while an overlay or a VM uses the image, then allowed', async () => {
      const name = imageName('used');
      const info = await importImage(conn('local'), { source: join(dkDir, 'dk.qcow2'), name });
      const { pool } = await ensurePool(conn('local'));
      const overlayName = `${tag}-root.qcow2`;
      const overlay = await pool.createVolume(overlayXml(overlayName, info.virtualSizeBytes, info.path));
      expect((await getImage(conn('local'), name)).inUseBy).toEqual([overlayName]);
      const e = await expectVmctlError(removeImage(conn('local'), name), 'CONFLICT', new RegExp(overlayName.replace(/\./g, '\\.')));
      expect(e.details).toMatchObject({ inUseBy: [overlayName] });
      await expectVmctlError(importImage(conn('local'), { source: qcow2, name, force: true }), 'CONFLICT');

      // through the CLI: exit 4, the overlay named in the one-line error
      const r = await vmctl(['image', 'rm', name, '--connect', LOCAL]);
      expect(r.code).toBe(4);
      expect(r.stderr).toContain(overlayName);
      await overlay.delete();

      // a VM booting the image's kernel directly
      const domName = `${tag}-vm`;
      if (info.boot.method !== 'direct-kernel') throw new Error('expected a direct-kernel image');
      await conn('local').defineDomain(tinyDomainXml({ name: domName, kernel: info.boot.kernelPath, initrd: info.boot.initrdPath }));
      expect((await getImage(conn('local'), name)).usedByDomains).toEqual([domName]);
      await expectVmctlError(removeImage(conn('local'), name), 'CONFLICT', new RegExp(`VM ${domName}`));
      await (await conn('local').lookupDomain(domName)).undefine();

      await removeImage(conn('local'), name);
      expect(await volumesOf(conn('local'), name)).toEqual([]);
      await expectVmctlError(removeImage(conn('local'), name), 'NOT_FOUND');
    });

    it('an abort during the upload rolls back every volume', async () => {
      const big = join(work, 'big.raw');
      writeFileSync(big, randomBytes(4096));
      truncateSync(big, 256 * 1024 * 1024);
      const name = imageName('abort');
      const ac = new AbortController();
      const p = importImage(conn('local'), {
        source: big,
        name,
        signal: ac.signal,
        onProgress: (e) => {
          if (e.phase === 'upload' && e.done > 0) ac.abort();
        },
      });
      const e = await expectVmctlError(p, 'ABORTED', /interrupted/);
      expect(e.details).toMatchObject({ aborted: true });
      expect(await volumesOf(conn('local'), name)).toEqual([]);
      unlinkSync(big);
    });
  });

  describe('build cache and ensureImage', () => {
    it('ensureImage uploads the built image to a remote host once, then finds it there', async () => {
      const name = imageName('deb');
      expect(builtImagePath(name)).toBe(join(testCache, 'images', `${name}.qcow2`));
      const manifest = JSON.parse(readFileSync(join(testCache, 'images', 'debian-12.qcow2.json'), 'utf8')) as {
        virtualSize: number;
        sha256: string;
        boot: { cmdline: string; kernelSha256: string };
      };
      const events: ImageProgress[] = [];
      const info: ImageInfo = await ensureImage(conn('rig'), name, { onProgress: (p) => events.push(p) });
      expect(info).toMatchObject({ name, format: 'qcow2', complete: true, virtualSizeBytes: manifest.virtualSize });
      expect(info.boot).toMatchObject({ method: 'direct-kernel', cmdline: manifest.boot.cmdline });
      expect(info.imported?.sha256).toBe(manifest.sha256);
      expect(events.some((e) => e.phase === 'upload' && e.finished)).toBe(true);
      const kernel = await downloadVolume(conn('rig'), `img_${name}.vmlinuz`);
      expect(createHash('sha256').update(kernel).digest('hex')).toBe(manifest.boot.kernelSha256);

      const again: ImageProgress[] = [];
      const second = await ensureImage(conn('rig'), name, { onProgress: (p) => again.push(p) });
      expect(second.imported?.importedAt).toBe(info.imported?.importedAt);
      expect(again).toEqual([]);
      await removeImage(conn('rig'), name);
    });

    it('ensureImage of an unknown image that is nowhere says how to import it', async () => {
      const e = await expectVmctlError(ensureImage(conn('local'), imageName('nowhere')), 'NOT_FOUND', /vmctl image import/);
      expect(e.message).toContain(imageName('nowhere'));
    });

    it('buildImageFiles turns PROGRESS lines into progress events; only debian-12 is buildable', async () => {
      const fake = join(work, 'fake-build.sh');
      const src = join(dkDir, 'dk.qcow2');
      writeFileSync(
        fake,
        [
          '#!/usr/bin/env bash',
          'set -e',
          '[ "$1" = debian-12 ] && [ "$2" = --out ] || exit 2',
          'out=$3',
          'echo "[fake] building" >&2',
          'echo "PROGRESS 5 debootstrap"',
          'echo "PROGRESS 50 apt: installing"',
          `cp ${src} "$out"; cp ${src}.vmlinuz "$out.vmlinuz"; cp ${src}.initrd "$out.initrd"`,
          `sed -e 's/dk\\.qcow2/debian-12.qcow2/g' ${src}.json > "$out.json"`,
          'echo "PROGRESS 100 done"',
          'echo "RESULT $out.json"',
        ].join('\n'),
        { mode: 0o755 },
      );
      const cache = mkdtempSync(join(work, 'cache-'));
      process.env.VMCTL_CACHE_DIR = cache;
      try {
        const events: ImageProgress[] = [];
        const logs: string[] = [];
        const manifest = await buildImageFiles('debian-12', { script: fake, onProgress: (p) => events.push(p), onLog: (l) => logs.push(l) });
        expect(manifest).toBe(join(cache, 'images', 'debian-12.qcow2.json'));
        expect(events).toEqual([
          { phase: 'build', image: 'debian-12', done: 5, total: 100, message: 'debootstrap' },
          { phase: 'build', image: 'debian-12', done: 50, total: 100, message: 'apt: installing' },
          { phase: 'build', image: 'debian-12', done: 100, total: 100, message: 'done' },
        ]);
        expect(logs).toContain('[fake] building');

        writeFileSync(fake, '#!/usr/bin/env bash\necho "build-image.sh: must run as root (debootstrap)" >&2\nexit 1\n', { mode: 0o755 });
        await expectVmctlError(buildImageFiles('debian-12', { script: fake }), 'AUTH', /must run as root/);
      } finally {
        process.env.VMCTL_CACHE_DIR = testCache;
      }
      await expectVmctlError(buildImage(conn('local'), 'ubuntu-22.04'), 'UNSUPPORTED', /debian-12/);
    });
  });

  describe('CLI', () => {
    it('import, list, rm with results on stdout, progress on stderr and the documented exit codes', async () => {
      const name = imageName('cli');
      const imp = await vmctl(['image', 'import', qcow2, '--name', name, '--connect', rig.tcpUri, '--json']);
      expect(imp.code, imp.stderr).toBe(0);
      const info = JSON.parse(imp.stdout) as ImageInfo;
      expect(info).toMatchObject({ name, format: 'qcow2', sizeBytes: statSync(qcow2).size, virtualSizeBytes: 64 * 1024 * 1024 });
      expect(imp.stderr).toMatch(/vmctl: upload .* disk/);

      const again = await vmctl(['image', 'import', qcow2, '--name', name, '--connect', rig.tcpUri]);
      expect(again.code).toBe(4);
      expect(again.stdout).toBe('');
      expect(again.stderr).toMatch(/already exists.*--force/);

      const listJson = await vmctl(['image', 'list', '--json', '--connect', rig.tcpUri]);
      expect(listJson.code, listJson.stderr).toBe(0);
      const listed = (JSON.parse(listJson.stdout) as ImageInfo[]).find((i) => i.name === name);
      expect(listed).toMatchObject({ format: 'qcow2', sizeBytes: statSync(qcow2).size, complete: true });

      const listText = await vmctl(['image', 'ls', '--connect', rig.tcpUri]);
      expect(listText.code).toBe(0);
      expect(listText.stdout).toMatch(/^NAME\s+FORMAT\s+SIZE\s+VIRTUAL\s+BOOT\s+USED BY/);
      expect(listText.stdout).toMatch(new RegExp(`^${name}\\s+qcow2\\s+.*64 MiB\\s+disk\\s+-$`, 'm'));

      const rm = await vmctl(['image', 'rm', name, '--connect', rig.tcpUri]);
      expect(rm.code, rm.stderr).toBe(0);
      expect(rm.stdout).toContain(`removed image ${name} (2 volumes)`);
      const rm2 = await vmctl(['image', 'rm', name, '--connect', rig.tcpUri, '--json']);
      expect(rm2.code).toBe(3);
      expect(JSON.parse(rm2.stdout)).toMatchObject({ error: { code: 'NOT_FOUND' } });
      expect(rm2.stderr).toContain('vmctl image import');

      for (const bad of ["a'b<c>", '../x']) {
        const r = await vmctl(['image', 'import', qcow2, '--name', bad, '--connect', LOCAL]);
        expect(r.code).toBe(2);
        expect(r.stderr).toMatch(/invalid image name/);
      }
      const missing = await vmctl(['image', 'import', join(work, 'missing.qcow2'), '--name', imageName('missing'), '--connect', LOCAL]);
      expect(missing.code).toBe(3);
      const bad = await vmctl(['image', 'import', qcow2, '--name', imageName('badsha'), '--sha256', 'b'.repeat(64), '--connect', LOCAL]);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/sha256 mismatch/);
      const build = await vmctl(['image', 'build', 'ubuntu', '--connect', LOCAL]);
      expect(build.code).toBe(9);
      const noName = await vmctl(['image', 'import', qcow2, '--connect', LOCAL]);
      expect(noName.code).toBe(2);
    });

    it('Ctrl-C during an upload exits 130 and leaves no volume behind', async () => {
      const big = join(work, 'sigint.raw');
      writeFileSync(big, randomBytes(4096));
      truncateSync(big, 1024 * 1024 * 1024);
      const name = imageName('sigint');
      ensureBuilt();
      const child = spawn(process.execPath, [join(repoRoot, 'bin', 'vmctl.js'), 'image', 'import', big, '--name', name, '--connect', LOCAL], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      let stdout = '';
      let signalled = false;
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (!signalled && /vmctl: upload /.test(stderr)) {
          signalled = true;
          child.kill('SIGINT');
        }
      });
      const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
      expect(signalled, stderr).toBe(true);
      expect(code, stderr).toBe(130);
      expect(stdout).toBe('');
      expect(stderr).toMatch(/interrupted \(nothing it made was left behind\)/);
      expect(await volumesOf(conn('local'), name)).toEqual([]);
      unlinkSync(big);
    });
  });
});
