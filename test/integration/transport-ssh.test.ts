/**
 * qemu+ssh:// against a real, throwaway sshd on 127.0.0.1 that forwards to
 * the real libvirtd socket. Needs root, /usr/sbin/sshd and a running
 * libvirtd (scripts/libvirtd.sh start): missing ones are failures.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostKeyError, TransportError } from '../../src/libvirt/transport/errors.js';
import { connectTransport } from '../../src/libvirt/transport/index.js';
import { fingerprintSha256 } from '../../src/libvirt/transport/known-hosts.js';
import type { TransportOptions } from '../../src/libvirt/transport/types.js';
import { parseLibvirtUri } from '../../src/libvirt/uri.js';
import { authList, REMOTE_PROC_AUTH_LIST, REMOTE_PROGRAM } from '../_helpers/raw-rpc.js';
import { startSshd, type SshdInstance } from '../_helpers/sshd.js';

const LIBVIRT_SOCK = '/run/libvirt/libvirt-sock';

let sshd: SshdInstance;
let dir: string;
let hostFp: string;

function sshUri(params: Record<string, string>, path = '/system', user = 'root'): string {
  const q = Object.entries(params)
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  return `qemu+ssh://${user}@127.0.0.1:${sshd.port}${path}?${q}`;
}

async function connect(uri: string, opts: TransportOptions = {}) {
  return connectTransport(parseLibvirtUri(uri), { timeoutMs: 15_000, ...opts });
}

async function rejected(p: Promise<unknown>): Promise<TransportError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(TransportError);
    expect((err as Error).message).not.toContain('\n');
    return err as TransportError;
  }
  throw new Error('expected the connection to be refused');
}

function tmpKnownHosts(name: string, content = ''): string {
  const f = join(dir, name);
  writeFileSync(f, content, { mode: 0o600 });
  return f;
}

beforeAll(async () => {
  expect(existsSync(LIBVIRT_SOCK), `${LIBVIRT_SOCK} missing: start libvirtd (scripts/libvirtd.sh start)`).toBe(true);
  sshd = await startSshd();
  dir = mkdtempSync(join(tmpdir(), 'vmctl-ssh-test-'));
  hostFp = fingerprintSha256(Buffer.from(sshd.hostKeyPub.split(' ')[1]!, 'base64'));
});

afterAll(async () => {
  await sshd?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('ssh transport (real sshd -> real libvirtd)', () => {
  it('reaches libvirtd through a streamlocal channel and gets an AUTH_LIST reply', async () => {
    const t = await connect(sshUri({ keyfile: sshd.keyfile, known_hosts: sshd.knownHosts }));
    try {
      expect(t.description).toBe(`ssh:root@127.0.0.1:${sshd.port}:${LIBVIRT_SOCK}`);
      expect(t.notices ?? []).toEqual([]);
      const h = await authList(t.stream);
      expect(h).toMatchObject({ program: REMOTE_PROGRAM, version: 1, procedure: REMOTE_PROC_AUTH_LIST, type: 1, serial: 1, status: 0 });
      expect(h.len).toBeGreaterThanOrEqual(28);
    } finally {
      const closed = new Promise<void>((r) => t.stream.once('close', () => r()));
      t.close();
      await closed;
    }
  });

  it('honours ?socket= (also via /var/run) and the virt-ssh-helper paths', async () => {
    const variants: [Record<string, string>, string, RegExp][] = [
      [{ socket: '/var/run/libvirt/libvirt-sock' }, '/system', /:\/var\/run\/libvirt\/libvirt-sock$/],
      [{ proxy: 'native' }, '/system', /\(virt-ssh-helper 'qemu:\/\/\/system'\)$/],
      // root's session is the system daemon; session URIs always go through virt-ssh-helper
      [{}, '/session', /\(virt-ssh-helper 'qemu:\/\/\/session'\)$/],
    ];
    for (const [extra, path, desc] of variants) {
      const t = await connect(sshUri({ keyfile: sshd.keyfile, known_hosts: sshd.knownHosts, ...extra }, path));
      try {
        expect(t.description).toMatch(desc);
        expect(await authList(t.stream)).toMatchObject({ procedure: REMOTE_PROC_AUTH_LIST, type: 1, status: 0 });
      } finally {
        t.close();
      }
    }
  });

  it('refuses an unknown host key with a clear error and records nothing', async () => {
    const kh = tmpKnownHosts('unknown_known_hosts');
    const e = await rejected(connect(sshUri({ keyfile: sshd.keyfile, known_hosts: kh })));
    expect(e).toBeInstanceOf(HostKeyError);
    expect(e.code).toBe('SSH_HOSTKEY_UNKNOWN');
    expect(e.message).toBe(`host key for [127.0.0.1]:${sshd.port} is unknown (ssh-ed25519 ${hostFp})`);
    expect(e.hint).toContain(`\`ssh-keyscan -p ${sshd.port} 127.0.0.1 >> ${kh}\``);
    expect(e.hint).toContain('--accept-host-key');
    expect(readFileSync(kh, 'utf8')).toBe('');
  });

  it('refuses a host key that differs from the known one, whatever the options', async () => {
    const other = join(dir, 'other_host_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const otherPub = readFileSync(`${other}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
    const content = `[127.0.0.1]:${sshd.port} ${otherPub}\n`;
    const kh = tmpKnownHosts('mismatch_known_hosts', content);
    const attempts: [Record<string, string>, TransportOptions][] = [
      [{}, {}],
      [{}, { acceptUnknownHostKey: true }],
      [{ no_verify: '1' }, { acceptUnknownHostKey: true }],
      [{ known_hosts_verify: 'auto' }, {}],
      [{ known_hosts_verify: 'ignore' }, {}],
    ];
    for (const [extra, opts] of attempts) {
      const e = await rejected(connect(sshUri({ keyfile: sshd.keyfile, known_hosts: kh, ...extra }), opts));
      expect(e).toBeInstanceOf(HostKeyError);
      expect(e.code).toBe('SSH_HOSTKEY_MISMATCH');
      expect(e.message).toContain('REMOTE HOST IDENTIFICATION HAS CHANGED');
      expect(e.message).toContain(`[127.0.0.1]:${sshd.port}`);
      expect(e.message).toContain(hostFp);
      expect(e.message).toContain('man-in-the-middle');
      expect(e.hint).toContain('ssh-keygen -R');
    }
    expect(readFileSync(kh, 'utf8')).toBe(content);
  });

  it('refuses a revoked host key', async () => {
    const kh = tmpKnownHosts('revoked_known_hosts', `[127.0.0.1]:${sshd.port} ${sshd.hostKeyPub}\n@revoked * ${sshd.hostKeyPub}\n`);
    const e = await rejected(connect(sshUri({ keyfile: sshd.keyfile, known_hosts: kh }), { acceptUnknownHostKey: true }));
    expect(e.code).toBe('SSH_HOSTKEY_MISMATCH');
    expect(e.message).toContain('@revoked');
  });

  it('acceptUnknownHostKey accepts and records a hashed entry that later connections (and ssh-keygen) find', async () => {
    const kh = tmpKnownHosts('accept_known_hosts', '# existing comment without newline');
    const t = await connect(sshUri({ keyfile: sshd.keyfile, known_hosts: kh }), { acceptUnknownHostKey: true });
    try {
      expect(await authList(t.stream)).toMatchObject({ status: 0 });
      expect(t.notices?.join('\n')).toContain(`Permanently added [127.0.0.1]:${sshd.port} (ssh-ed25519 ${hostFp})`);
    } finally {
      t.close();
    }
    const lines = readFileSync(kh, 'utf8').split('\n');
    expect(lines[0]).toBe('# existing comment without newline');
    expect(lines[1]).toMatch(/^\|1\|[A-Za-z0-9+/=]+\|[A-Za-z0-9+/=]+ ssh-ed25519 /);
    expect(lines.filter((l) => l !== '')).toHaveLength(2);
    const found = spawnSync('ssh-keygen', ['-F', `[127.0.0.1]:${sshd.port}`, '-f', kh], { encoding: 'utf8' });
    expect(found.status).toBe(0);
    // now known: a strict connection works and records nothing new
    const t2 = await connect(sshUri({ keyfile: sshd.keyfile, known_hosts: kh }));
    t2.close();
    expect(readFileSync(kh, 'utf8').split('\n').filter((l) => l !== '')).toHaveLength(2);
  });

  it('no_verify=1 and known_hosts_verify=auto also accept and record an unknown key', async () => {
    for (const [name, extra] of [
      ['nv', { no_verify: '1' }],
      ['auto', { known_hosts_verify: 'auto' }],
    ] as const) {
      const kh = tmpKnownHosts(`${name}_known_hosts`);
      const t = await connect(sshUri({ keyfile: sshd.keyfile, known_hosts: kh, ...extra }));
      t.close();
      expect(readFileSync(kh, 'utf8')).toMatch(/^\|1\|.* ssh-ed25519 /);
    }
  });

  it('reports a key the server does not accept', async () => {
    const stranger = join(dir, 'stranger');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', stranger]);
    const e = await rejected(connect(sshUri({ keyfile: stranger, known_hosts: sshd.knownHosts })));
    expect(e.code).toBe('SSH_AUTH');
    expect(e.message).toBe(`ssh authentication as root@127.0.0.1:${sshd.port} failed (tried: ${stranger})`);
    expect(e.hint).toContain('authorized_keys');
  });

  it('refuses an encrypted keyfile without an agent', async () => {
    const enc = join(dir, 'encrypted');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'secret passphrase', '-f', enc]);
    // sshauth=privkey: no agent, whatever the environment has
    const e = await rejected(connect(sshUri({ keyfile: enc, known_hosts: sshd.knownHosts, sshauth: 'privkey' })));
    expect(e.code).toBe('SSH_AUTH');
    expect(e.message).toContain(`SSH key ${enc} is encrypted`);
    expect(e.hint).toContain(`ssh-add ${enc}`);
  });

  it('reports sshd not listening', async () => {
    const port = sshd.port === 65535 ? sshd.port - 1 : sshd.port + 1;
    const e = await rejected(connect(`qemu+ssh://root@127.0.0.1:${port}/system?keyfile=${sshd.keyfile}&known_hosts=${sshd.knownHosts}`));
    expect(e.code).toBe('CONNECT_FAILED');
    expect(e.message).toBe(`connection to 127.0.0.1:${port} refused`);
    expect(e.hint).toContain('sshd');
  });

  it('fails the stream with virt-ssh-helper\'s own error when it exits early', async () => {
    const t = await connect(sshUri({ keyfile: sshd.keyfile, known_hosts: sshd.knownHosts, proxy: 'native', name: 'qemu://otherhost/system' }));
    try {
      const err = await authList(t.stream).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(TransportError);
      expect((err as TransportError).code).toBe('SSH_CHANNEL');
      expect((err as Error).message).toMatch(/^'virt-ssh-helper 'qemu:\/\/otherhost\/system'' failed on 127\.0\.0\.1:\d+ \(exit 1\): .*unexpected URI transport/);
    } finally {
      t.close();
    }
  });

  it('reports a remote socket that does not exist (?socket= disables the helper fallback)', async () => {
    const e = await rejected(connect(sshUri({ keyfile: sshd.keyfile, known_hosts: sshd.knownHosts, socket: '/run/libvirt/nope-sock' })));
    expect(e.code).toBe('SSH_CHANNEL');
    expect(e.message).toContain('could not open the libvirt socket (/run/libvirt/nope-sock:');
  });
});

describe('ssh transport when sshd forbids socket forwarding', () => {
  let locked: SshdInstance;
  beforeAll(async () => {
    locked = await startSshd({ extraConfig: ['AllowStreamLocalForwarding no'] });
  });
  afterAll(async () => {
    await locked?.stop();
  });

  it('falls back to virt-ssh-helper by default (proxy=auto)', async () => {
    const t = await connect(`qemu+ssh://root@127.0.0.1:${locked.port}/system?keyfile=${locked.keyfile}&known_hosts=${locked.knownHosts}`);
    try {
      expect(t.description).toMatch(/\(virt-ssh-helper 'qemu:\/\/\/system'\)$/);
      expect(await authList(t.stream)).toMatchObject({ procedure: REMOTE_PROC_AUTH_LIST, type: 1, status: 0 });
    } finally {
      t.close();
    }
  });

  it('says so with proxy=netcat', async () => {
    const e = await rejected(connect(`qemu+ssh://root@127.0.0.1:${locked.port}/system?keyfile=${locked.keyfile}&known_hosts=${locked.knownHosts}&proxy=netcat`));
    expect(e.code).toBe('SSH_CHANNEL');
    expect(e.message).toContain('/run/libvirt/libvirt-sock');
    expect(e.message).toContain('/run/libvirt/virtqemud-sock');
    expect(e.hint).toContain('AllowStreamLocalForwarding');
    expect(e.hint).toContain('proxy=native');
  });
});
