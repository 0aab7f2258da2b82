import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TransportError } from '../../src/libvirt/transport/errors.js';
import { chooseUnixSocket, connectUnix, type UnixSocketHost } from '../../src/libvirt/transport/unix.js';
import { parseLibvirtUri } from '../../src/libvirt/uri.js';

function host(over: Partial<UnixSocketHost> & { files?: string[] } = {}): UnixSocketHost {
  const files = over.files ?? [];
  return { euid: over.euid ?? 0, env: over.env ?? {}, home: over.home ?? '/root', exists: over.exists ?? ((p) => files.includes(p)) };
}

const u = (s: string) => parseLibvirtUri(s);

describe('chooseUnixSocket', () => {
  it('system: the modular socket if present, else the libvirtd socket (libvirt mode=auto)', () => {
    expect(chooseUnixSocket(u('qemu:///system'), false, host({ files: ['/run/libvirt/libvirt-sock'] })).path).toBe('/run/libvirt/libvirt-sock');
    expect(chooseUnixSocket(u('qemu:///system'), false, host({ files: ['/run/libvirt/virtqemud-sock'] })).path).toBe('/run/libvirt/virtqemud-sock');
    expect(chooseUnixSocket(u('qemu:///system'), false, host({ files: ['/run/libvirt/virtqemud-sock', '/run/libvirt/libvirt-sock'] })).path).toBe(
      '/run/libvirt/virtqemud-sock',
    );
    const none = chooseUnixSocket(u('qemu:///system'), false, host());
    expect(none.noneExists).toBe(true);
    expect(none.candidates).toEqual(['/run/libvirt/virtqemud-sock', '/run/libvirt/libvirt-sock']);
  });

  it('read-only sockets, ?mode= and ?socket=', () => {
    expect(chooseUnixSocket(u('qemu:///system'), true, host({ files: ['/run/libvirt/libvirt-sock-ro'] })).path).toBe('/run/libvirt/libvirt-sock-ro');
    expect(chooseUnixSocket(u('qemu:///system?mode=legacy'), false, host({ files: ['/run/libvirt/virtqemud-sock'] })).path).toBe('/run/libvirt/libvirt-sock');
    expect(chooseUnixSocket(u('qemu:///system?mode=direct'), false, host({ files: ['/run/libvirt/libvirt-sock'] })).path).toBe('/run/libvirt/virtqemud-sock');
    const c = chooseUnixSocket(u('qemu+unix:///system?socket=/tmp/x.sock'), false, host());
    expect(c).toMatchObject({ path: '/tmp/x.sock', explicit: true });
  });

  it('session (non-root): $XDG_RUNTIME_DIR/libvirt, else ~/.cache/libvirt', () => {
    expect(chooseUnixSocket(u('qemu:///session'), false, host({ euid: 1000, env: { XDG_RUNTIME_DIR: '/run/user/1000' } })).path).toBe(
      '/run/user/1000/libvirt/libvirt-sock',
    );
    expect(
      chooseUnixSocket(u('qemu:///session'), false, host({ euid: 1000, env: { XDG_RUNTIME_DIR: '/run/user/1000' }, files: ['/run/user/1000/libvirt/virtqemud-sock'] })).path,
    ).toBe('/run/user/1000/libvirt/virtqemud-sock');
    expect(chooseUnixSocket(u('qemu:///session'), false, host({ euid: 1000, home: '/home/u' })).path).toBe('/home/u/.cache/libvirt/libvirt-sock');
    expect(chooseUnixSocket(u('qemu:///session'), false, host({ euid: 1000, home: '/home/u' })).session).toBe(true);
  });

  it("root's qemu:///session goes to the system daemon, as in libvirt", () => {
    const c = chooseUnixSocket(u('qemu:///session'), false, host({ euid: 0, env: { XDG_RUNTIME_DIR: '/run/user/0' }, files: ['/run/libvirt/libvirt-sock'] }));
    expect(c).toMatchObject({ path: '/run/libvirt/libvirt-sock', session: false });
  });
});

describe('connectUnix errors', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmctl-unix-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function rejected(p: Promise<unknown>): Promise<TransportError> {
    try {
      await p;
    } catch (err) {
      expect(err).toBeInstanceOf(TransportError);
      expect((err as Error).message).not.toContain('\n');
      return err as TransportError;
    }
    throw new Error('expected a rejection');
  }

  it('no system daemon socket', async () => {
    const e = await rejected(connectUnix(u('qemu:///system'), {}, host({ files: [] })));
    expect(e.code).toBe('CONNECT_FAILED');
    expect(e.message).toBe('cannot connect to libvirt: no daemon socket at /run/libvirt/virtqemud-sock or /run/libvirt/libvirt-sock');
    expect(e.hint).toMatch(/^libvirtd is not running: start it \(.*scripts\/libvirtd\.sh start.*\) or check --connect$/);
  });

  it('session daemon not running', async () => {
    const xdg = join(dir, 'xdg');
    const e = await rejected(connectUnix(u('qemu:///session'), {}, { euid: 1000, env: { XDG_RUNTIME_DIR: xdg }, home: dir, exists: existsSync }));
    expect(e.message).toBe(`the libvirt session daemon is not running (no daemon socket at ${xdg}/libvirt/virtqemud-sock or ${xdg}/libvirt/libvirt-sock)`);
    expect(e.hint).toContain('does not autostart');
  });

  it('explicit ?socket= that does not exist', async () => {
    const p = join(dir, 'nope.sock');
    const e = await rejected(connectUnix(u(`qemu+unix:///system?socket=${p}`)));
    expect(e.code).toBe('CONNECT_FAILED');
    expect(e.message).toContain(`no daemon socket at ${p}`);
    expect(e.hint).toContain('socket=');
  });

  it('stale socket (nothing listening)', async () => {
    const p = join(dir, 'stale.sock');
    // a process that listens and is SIGKILLed leaves its socket file behind
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(existsSync(p)).toBe(true);
    const e = await rejected(connectUnix(u(`qemu+unix:///system?socket=${p}`)));
    expect(e.message).toBe(`cannot connect to libvirt: nothing is listening on ${p} (stale socket of a stopped daemon?)`);
  });

  it('connects to a listening socket', async () => {
    const p = join(dir, 'live', 'libvirt-sock');
    mkdirSync(join(dir, 'live'));
    const srv = createServer((s) => s.end('hi'));
    await new Promise<void>((r) => srv.listen(p, () => r()));
    try {
      const t = await connectUnix(u(`qemu+unix:///system?socket=${p}`));
      expect(t.description).toBe(`unix:${p}`);
      const got: Buffer = await new Promise((r) => t.stream.once('data', r));
      expect(got.toString()).toBe('hi');
      t.close();
    } finally {
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});
