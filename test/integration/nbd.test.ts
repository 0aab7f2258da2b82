/**
 * vmctl's NBD client (pull-mode backups) against a real NBD server: qemu-nbd exporting a qcow2 on a
 * unix socket, read-only, as libvirt's pull-mode backup job exports a disk. Reads at odd offsets and
 * across the 32 MiB request limit, many at once, the extents through qemu-img, a wrong export name
 * refused, and a server that goes away mid-read failing every pending read.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, nbdExtents } from '../../src/core/backup/nbd.js';

const MiB = 1024 * 1024;

describe('NBD client against qemu-nbd', () => {
  let work: string;
  let raw: string;
  let server: ChildProcess | undefined;
  const exp = () => ({ socket: join(work, 'nbd.sock'), name: 'vda' });

  const serve = async (): Promise<ChildProcess> => {
    rmSync(exp().socket, { force: true });
    const p = spawn('qemu-nbd', ['--read-only', '--persistent', '--shared=8', `--socket=${exp().socket}`, '--export-name=vda', '--format=qcow2', join(work, 'disk.qcow2')], { stdio: 'ignore' });
    for (let i = 0; i < 200 && !existsSync(exp().socket); i++) await new Promise((r) => setTimeout(r, 25));
    expect(existsSync(exp().socket), 'qemu-nbd made its socket').toBe(true);
    return p;
  };

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'vmctl-nbd-'));
    const disk = join(work, 'disk.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '256M']);
    // patterned data at odd places: 1 MiB at 0, 40 MiB at 64 MiB (longer than one request), 3 KiB at 200 MiB + 512
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0xa5 64M 40M', '-c', 'write -P 0x33 209715712 3k', disk], { stdio: 'ignore' });
    raw = join(work, 'disk.raw');
    execFileSync('qemu-img', ['convert', '-O', 'raw', disk, raw]);
    server = await serve();
  });

  afterAll(() => {
    server?.kill('SIGKILL');
    rmSync(work, { recursive: true, force: true });
  });

  const expected = (off: number, n: number) => {
    const b = Buffer.alloc(n);
    const fd = openSync(raw, 'r');
    readSync(fd, b, 0, n, off);
    closeSync(fd);
    return b;
  };

  it('reads what the image holds at any offset, within and across the 32 MiB request limit, many reads at once', async () => {
    const c = await NbdClient.open(exp());
    try {
      expect(c.size).toBe(256 * MiB);
      const reads: Array<[number, number]> = [[0, 4096], [MiB - 7, 14], [64 * MiB - 100, 40 * MiB + 200], [209715712 - 1, 3 * 1024 + 2], [255 * MiB, MiB], [12345, 1]];
      const bufs = reads.map(([, n]) => Buffer.alloc(n, 0xee));
      await Promise.all(reads.map(([off], i) => c.read(bufs[i]!, off)));
      for (const [i, [off, n]] of reads.entries()) expect(bufs[i]!.equals(expected(off, n)), `read ${off}+${n}`).toBe(true);
      await expect(c.read(Buffer.alloc(4096), 256 * MiB - 2048)).rejects.toThrow(/read past the end/);
    } finally {
      await c.close();
    }
  });

  it('the extents come from qemu-img over the same export: data where it was written, the rest zero', async () => {
    const map = await nbdExtents(exp());
    const data = map.filter((e) => e.data).map((e) => [e.start, e.start + e.length]);
    const covered = (a: number, b: number) => data.some(([x, y]) => x! <= a && b <= y!);
    expect(covered(0, MiB)).toBe(true);
    expect(covered(64 * MiB, 104 * MiB)).toBe(true);
    expect(covered(209715712, 209715712 + 3072)).toBe(true);
    expect(data.reduce((s, [x, y]) => s + (y! - x!), 0)).toBeLessThan(45 * MiB);
    expect(map.at(-1)!.start + map.at(-1)!.length).toBe(256 * MiB);
  });

  it('an export name the server does not have is refused with a clear error', async () => {
    await expect(NbdClient.open({ socket: exp().socket, name: 'vdb' })).rejects.toThrow(/NBD export vdb at .*: export 'vdb' refused \(NBD error/);
  });

  it('no server at the socket: a clear error, not a hang', async () => {
    // a CONNECTION error naming the export, the socket and the likely cause
    await expect(NbdClient.open({ socket: join(work, 'none.sock'), name: 'vda' })).rejects.toMatchObject({
      code: 'CONNECTION',
      message: expect.stringMatching(/^the backup job's export of disk vda went away \(connect ENOENT .*none\.sock\): the VM stopped or its libvirtd restarted$/),
    });
  });

  it('the server going away mid-read fails every pending read', async () => {
    const c = await NbdClient.open(exp());
    // many large reads in flight, then the server is killed: none may hang, all reject
    const reads = Array.from({ length: 16 }, (_, i) => c.read(Buffer.alloc(32 * MiB), (i % 7) * 32 * MiB));
    server!.kill('SIGKILL');
    const results = await Promise.allSettled(reads);
    const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    expect(failed.length).toBeGreaterThan(0);
    for (const f of failed) expect(String(f.reason)).toMatch(/export of disk vda went away \((the server closed the connection|.*ECONNRESET|.*EPIPE)/);
    await expect(c.read(Buffer.alloc(16), 0)).rejects.toThrow(/export of disk vda went away/);
    await c.close();
    server = await serve();
  });
});
