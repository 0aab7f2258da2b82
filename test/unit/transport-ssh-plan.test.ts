/** planSsh(): what the ssh transport will do for a URI, without connecting. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TransportError } from '../../src/libvirt/transport/errors.js';
import { connectSsh, planSsh, type SshEnv } from '../../src/libvirt/transport/ssh.js';
import { createServer, type Socket } from 'node:net';
import { parseLibvirtUri } from '../../src/libvirt/uri.js';

let dir: string;
let home: string; // ~/.ssh/id_ed25519 (plain) + ~/.ssh/id_rsa (encrypted)
let encHome: string; // only an encrypted ~/.ssh/id_ecdsa
let emptyHome: string;
let agentSock: string;

const env = (h: string, extra: NodeJS.ProcessEnv = {}): SshEnv => ({ env: extra, home: h, username: 'alice' });
const u = (s: string) => parseLibvirtUri(s);

function keygen(path: string, type: string, pass = ''): void {
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', pass, '-f', path]);
}

function planError(f: () => unknown): TransportError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(TransportError);
    expect((err as Error).message).not.toContain('\n');
    return err as TransportError;
  }
  throw new Error('expected planSsh to throw');
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vmctl-sshplan-'));
  home = join(dir, 'home');
  encHome = join(dir, 'enc');
  emptyHome = join(dir, 'empty');
  for (const h of [home, encHome, emptyHome]) mkdirSync(join(h, '.ssh'), { recursive: true });
  keygen(join(home, '.ssh', 'id_ed25519'), 'ed25519');
  keygen(join(home, '.ssh', 'id_rsa'), 'rsa', 'secret');
  keygen(join(encHome, '.ssh', 'id_ecdsa'), 'ecdsa', 'secret');
  agentSock = join(dir, 'agent.sock');
  writeFileSync(agentSock, ''); // only its existence matters to planSsh
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('planSsh', () => {
  it('defaults: local user, port 22, ~/.ssh/known_hosts, strict, libvirtd socket then virtqemud, then virt-ssh-helper', () => {
    const p = planSsh(u('qemu+ssh://host.example/system'), {}, env(home));
    expect(p).toMatchObject({ host: 'host.example', port: 22, username: 'alice', knownHostsFile: join(home, '.ssh', 'known_hosts'), policy: 'strict' });
    expect(p.agent).toBeUndefined();
    expect(p.keys.map((k) => k.path)).toEqual([join(home, '.ssh', 'id_ed25519')]); // the encrypted id_rsa is skipped
    expect(p.remoteSockets).toEqual([
      '/run/libvirt/libvirt-sock',
      '/run/libvirt/virtqemud-sock',
      '/var/run/libvirt/libvirt-sock',
      '/var/run/libvirt/virtqemud-sock',
    ]);
    expect(p.helperCommand).toBe("virt-ssh-helper 'qemu:///system'");
  });

  it('user, port, known_hosts and keyfile from the URI', () => {
    const k = join(home, '.ssh', 'id_ed25519');
    const p = planSsh(u(`qemu+ssh://bob@[::1]:2222/system?keyfile=${k}&known_hosts=/tmp/kh`), {}, env(emptyHome));
    expect(p).toMatchObject({ host: '::1', port: 2222, username: 'bob', knownHostsFile: '/tmp/kh' });
    expect(p.keys.map((x) => x.path)).toEqual([k]);
  });

  it('host key policies', () => {
    const pol = (s: string, accept = false) => planSsh(u(s), { acceptUnknownHostKey: accept }, env(home)).policy;
    expect(pol('qemu+ssh://h/system')).toBe('strict');
    expect(pol('qemu+ssh://h/system', true)).toBe('accept-new');
    expect(pol('qemu+ssh://h/system?no_verify=1')).toBe('accept-new');
    expect(pol('qemu+ssh://h/system?no_verify=0')).toBe('strict');
    expect(pol('qemu+ssh://h/system?known_hosts_verify=auto')).toBe('accept-new');
    expect(pol('qemu+ssh://h/system?known_hosts_verify=ignore')).toBe('accept-unrecorded');
  });

  it('remote side: ?socket=, ?proxy=, ?mode=, /session and read-only', () => {
    const p1 = planSsh(u('qemu+ssh://h/system?socket=/srv/sock'), {}, env(home));
    expect(p1.remoteSockets).toEqual(['/srv/sock']);
    expect(p1.helperCommand).toBeUndefined();
    const p2 = planSsh(u('qemu+ssh://h/system?proxy=netcat&mode=direct'), {}, env(home));
    expect(p2.remoteSockets).toEqual(['/run/libvirt/virtqemud-sock', '/var/run/libvirt/virtqemud-sock']);
    expect(p2.helperCommand).toBeUndefined();
    const p3 = planSsh(u('qemu+ssh://h/system?proxy=native'), { readOnly: true }, env(home));
    expect(p3.remoteSockets).toEqual([]);
    expect(p3.helperCommand).toBe("virt-ssh-helper -r 'qemu:///system'");
    const p4 = planSsh(u("qemu+ssh://h/session?foo=it's"), {}, env(home));
    expect(p4.remoteSockets).toEqual([]);
    expect(p4.helperCommand).toBe(`virt-ssh-helper 'qemu:///session?foo=it%27s'`);
    const p5 = planSsh(u('qemu+ssh://h/system?mode=legacy'), { readOnly: true }, env(home));
    expect(p5.remoteSockets).toEqual(['/run/libvirt/libvirt-sock-ro', '/var/run/libvirt/libvirt-sock-ro']);
  });

  it('uses an agent when SSH_AUTH_SOCK exists, and lets it stand in for encrypted keys', () => {
    const p = planSsh(u('qemu+ssh://h/system'), {}, env(encHome, { SSH_AUTH_SOCK: agentSock }));
    expect(p.agent).toBe(agentSock);
    expect(p.keys).toEqual([]);
    const enc = join(encHome, '.ssh', 'id_ecdsa');
    expect(planSsh(u(`qemu+ssh://h/system?keyfile=${enc}`), {}, env(emptyHome, { SSH_AUTH_SOCK: agentSock })).keys).toEqual([]);
    // sshauth=privkey turns the agent off
    expect(() => planSsh(u('qemu+ssh://h/system?sshauth=privkey'), {}, env(encHome, { SSH_AUTH_SOCK: agentSock }))).toThrow(/encrypted/);
  });

  it('clear errors for unusable credentials', () => {
    const e1 = planError(() => planSsh(u('qemu+ssh://h/system'), {}, env(encHome)));
    expect(e1.code).toBe('SSH_AUTH');
    expect(e1.message).toBe('no usable SSH credentials for alice@h: ~/.ssh/id_ecdsa is encrypted and no ssh-agent is available (vmctl cannot ask for passphrases)');
    expect(e1.hint).toContain('ssh-add ~/.ssh/id_ecdsa');

    const e2 = planError(() => planSsh(u('qemu+ssh://h:2200/system'), {}, env(emptyHome, { SSH_AUTH_SOCK: join(dir, 'gone.sock') })));
    expect(e2.message).toBe(
      'no SSH credentials for alice@h:2200: no ssh-agent (SSH_AUTH_SOCK does not exist) and no private key (~/.ssh/id_ed25519, ~/.ssh/id_ecdsa, ~/.ssh/id_rsa)',
    );
    expect(e2.hint).toContain('ssh-copy-id -p 2200 alice@h');

    const e3 = planError(() => planSsh(u(`qemu+ssh://h/system?keyfile=${join(dir, 'missing')}`), {}, env(home)));
    expect(e3.message).toBe(`cannot use SSH key ${join(dir, 'missing')} (?keyfile=): no such file`);

    const e4 = planError(() => planSsh(u('qemu+ssh://h/system?sshauth=password'), {}, env(home)));
    expect(e4.message).toContain('no supported SSH authentication method');
  });
});

describe('connectSsh against a silent server', () => {
  it('times out and honours abort, with clear errors', async () => {
    const socks: Socket[] = [];
    const srv = createServer((c) => socks.push(c)); // accepts, never says anything
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as { port: number }).port;
    const uri = u(`qemu+ssh://root@127.0.0.1:${port}/system?known_hosts=${join(dir, 'kh')}`);
    try {
      const t0 = Date.now();
      const e1 = await connectSsh(uri, { timeoutMs: 300 }, env(home)).then(
        () => null,
        (err: unknown) => err as TransportError,
      );
      expect(e1).toBeInstanceOf(TransportError);
      expect(e1!.code).toBe('TIMEOUT');
      expect(e1!.message).toContain(`127.0.0.1:${port}`);
      expect(Date.now() - t0).toBeLessThan(5000);

      const ac = new AbortController();
      setTimeout(() => ac.abort(), 100);
      const e2 = await connectSsh(uri, { signal: ac.signal }, env(home)).then(
        () => null,
        (err: unknown) => err as TransportError,
      );
      expect(e2!.code).toBe('ABORTED');
    } finally {
      for (const c of socks) c.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});
