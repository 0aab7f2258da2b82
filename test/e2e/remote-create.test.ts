/**
 * `vmctl create` on remote libvirt hosts, with the default template (a
 * user-mode NIC whose SSH forward listens on the libvirt host's loopback).
 *
 * - qemu+tcp to the rig's host1: vmctl cannot reach that host's loopback, so
 *   `--wait ssh` is refused before anything is made and `vmctl ssh` names
 *   qemu+ssh as the fix; the forward's port is picked without looking
 *   (remote) and a port QEMU finds taken is replaced by the next one.
 * - qemu+ssh to the rig's mig1 (its own network namespace, sshd inside):
 *   the image is uploaded there, the guest boots to SSH-ready and `vmctl ssh`
 *   reaches it through the libvirt connection's ssh session — its forward is
 *   on mig1's loopback, which this (root) network namespace cannot see.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection } from '../../src/libvirt/connection.js';
import { ensureRig, ensureRigSshHost, repoRoot, type RigEnv, type RigSshHost } from '../_helpers/rig.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';

async function snapshot(uri: string): Promise<{ domains: string[]; volumes: string[] }> {
  const conn = await Connection.open(uri);
  try {
    const pool = await conn.lookupStoragePool('vmctl').catch(() => undefined);
    return {
      domains: (await conn.listDomains({ inactive: true })).map((d) => d.name).sort(),
      volumes: pool ? (await pool.listVolumes()).map((v) => v.name).sort() : [],
    };
  } finally {
    await conn.close();
  }
}

function listen(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

describe('create on a remote host over qemu+tcp (host1)', () => {
  let rig: RigEnv;
  let env: NodeJS.ProcessEnv;
  let dataDir: string;
  const VM = 'rtcp1';

  beforeAll(async () => {
    ensureBuilt();
    rig = await ensureRig();
    dataDir = mkdtempSync(join(tmpdir(), 'vmctl-data-'));
    env = { VMCTL_CACHE_DIR: join(repoRoot, '.cache'), VMCTL_DATA_DIR: dataDir };
    if ((await snapshot(rig.tcpUri)).domains.includes(VM)) throw new Error(`${VM} already exists on host1; remove it first`);
  });

  afterAll(async () => {
    if (rig && (await snapshot(rig.tcpUri)).domains.includes(VM)) await vmctl(['delete', VM, '-c', rig.tcpUri], { env });
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('--wait ssh is refused before anything is made, naming qemu+ssh', async () => {
    const before = await snapshot(rig.tcpUri);
    const r = await vmctl(['create', VM, '-c', rig.tcpUri, '--accel', 'tcg', '--wait', 'ssh'], { env });
    expect(r.code, r.stderr).toBe(9);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/cannot reach.*qemu\+ssh:\/\/127\.0\.0\.1\/system/);
    expect(await snapshot(rig.tcpUri)).toEqual(before);
  });

  it('picks the SSH forward port blind on the remote host, moves on when QEMU finds it taken, and waits for an IP (saying why not ssh)', { timeout: 10 * 60_000 }, async () => {
    // host1 shares this network namespace: hold four of five ports so that
    // QEMU there fails on whichever of them vmctl tries first
    const base = 20000 + Math.floor(Math.random() * 10000);
    const held = await Promise.all([0, 1, 2, 3].map((i) => listen(base + i)));
    try {
      const r = await vmctl(['create', VM, '-c', rig.tcpUri, '--accel', 'tcg', '--json', '--log-level', 'info'], {
        env: { ...env, VMCTL_FORWARD_PORTS: `${base}-${base + 4}` },
        timeoutMs: 10 * 60_000,
      });
      expect(r.code, r.stderr).toBe(0);
      const res = JSON.parse(r.stdout) as { state: string; ssh: { host: string; port: number }; ip: string; phases: { phase: string }[] };
      expect(res.state).toBe('running');
      // without --wait, "ready" over tcp is the guest's IP (from its agent), and vmctl says why
      expect(res.phases.map((p) => p.phase)).toEqual(['defined', 'started', 'ip']);
      expect(res.ip).toBe('10.0.2.15');
      expect(r.stderr).toMatch(/cannot reach the guest's SSH forward.*waiting for an IP only.*qemu\+ssh/);
      expect(res.ssh).toMatchObject({ host: '127.0.0.1', port: base + 4 });
      // whatever vmctl tried first and found taken is in the log, with the port
      for (const m of r.stderr.matchAll(/port taken[^\n]*\n\s*port: (\d+)/g)) expect(Number(m[1])).toBeLessThan(base + 4);
    } finally {
      await Promise.all(held.map((s) => new Promise((r) => s.close(r))));
    }
  });

  it('vmctl ssh over qemu+tcp says why it cannot and what to use', async () => {
    const r = await vmctl(['ssh', VM, '-c', rig.tcpUri, '--', 'true'], { env });
    expect(r.code).toBe(9);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/loopback of 127\.0\.0\.1.*qemu\+ssh/);
  });

  it('delete removes the domain and its volumes on the remote host', async () => {
    const r = await vmctl(['delete', VM, '-c', rig.tcpUri], { env });
    expect(r.code, r.stderr).toBe(0);
    const after = await snapshot(rig.tcpUri);
    expect(after.domains).not.toContain(VM);
    expect(after.volumes.filter((v) => v.startsWith(`${VM}-`))).toEqual([]);
  });
});

describe('create on a remote host over qemu+ssh (mig1, its own network namespace)', () => {
  let host: RigSshHost;
  let env: NodeJS.ProcessEnv;
  let dataDir: string;
  const VM = 'rssh1';
  const inNetns = (...cmd: string[]) => execFileSync('ip', ['netns', 'exec', host.netns, ...cmd], { encoding: 'utf8' });
  const listening = (ss: string, port: number) => ss.split('\n').some((l) => l.includes(`127.0.0.1:${port} `));

  beforeAll(async () => {
    ensureBuilt();
    ({ host } = await ensureRigSshHost());
    dataDir = mkdtempSync(join(tmpdir(), 'vmctl-data-'));
    env = { VMCTL_CACHE_DIR: join(repoRoot, '.cache'), VMCTL_DATA_DIR: dataDir };
    if ((await snapshot(host.unixUri)).domains.includes(VM)) throw new Error(`${VM} already exists on ${host.name}; remove it first`);
  });

  afterAll(async () => {
    if (host && (await snapshot(host.unixUri)).domains.includes(VM)) await vmctl(['delete', VM, '-c', host.sshUri], { env });
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('creates the VM there (uploading the image it lacks) and waits until SSH and cloud-init are ready, through the ssh session', { timeout: 20 * 60_000 }, async () => {
    // the base image is missing there: create uploads it through volume streams, with progress
    if ((await snapshot(host.unixUri)).volumes.some((v) => v.startsWith('img_debian-12.'))) {
      const rm = await vmctl(['image', 'rm', 'debian-12', '-c', host.sshUri], { env });
      expect(rm.code, rm.stderr).toBe(0);
    }
    const r = await vmctl(['create', VM, '-c', host.sshUri, '--accel', 'tcg', '--json'], { env, timeoutMs: 20 * 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/upload[^\n]*100% [^\n]*done/i);
    const res = JSON.parse(r.stdout) as { state: string; ssh: { host: string; port: number }; phases: { phase: string }[] };
    expect(res.state).toBe('running');
    expect(res.phases.map((p) => p.phase)).toEqual(['defined', 'started', 'ip', 'sshd', 'cloud-init']);
    // the forward listens on mig1's loopback only: invisible from this network namespace
    expect(listening(inNetns('ss', '-Hltn'), res.ssh.port)).toBe(true);
    expect(listening(execFileSync('ss', ['-Hltn'], { encoding: 'utf8' }), res.ssh.port)).toBe(false);
    // and the image vmctl uploaded is in mig1's pool
    expect((await snapshot(host.unixUri)).volumes).toEqual(expect.arrayContaining(['img_debian-12.qcow2', `${VM}-root.qcow2`, `${VM}-seed.iso`]));
  });

  it('vmctl ssh reaches the guest through the libvirt connection, verifying its pinned host key', { timeout: 120_000 }, async () => {
    const r = await vmctl(['ssh', VM, '-c', host.sshUri, '--', 'cat', '/etc/hostname'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`${VM}\n`);
    const code = await vmctl(['ssh', VM, '-c', host.sshUri, '--', 'exit', '3'], { env });
    expect(code.code).toBe(3);
  });

  it('delete removes the domain and its volumes there, keeping the image', { timeout: 120_000 }, async () => {
    const r = await vmctl(['delete', VM, '-c', host.sshUri], { env });
    expect(r.code, r.stderr).toBe(0);
    const after = await snapshot(host.unixUri);
    expect(after.domains).not.toContain(VM);
    expect(after.volumes.filter((v) => v.startsWith(`${VM}-`))).toEqual([]);
    expect(after.volumes).toContain('img_debian-12.qcow2');
  });
});
