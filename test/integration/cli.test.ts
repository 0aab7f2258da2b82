/**
 * The vmctl binary end to end: `list` and `version` on every transport, the
 * ssh host-key policy as a user meets it (HOME is a throwaway dir holding
 * ~/.ssh/id_ed25519 and ~/.ssh/known_hosts), JSON output and exit codes.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureRig, type RigEnv } from '../_helpers/rig.js';
import { startSshd, type SshdInstance } from '../_helpers/sshd.js';
import { tinyDomainXml } from '../_helpers/tiny-domain.js';
import { vmctl, ensureBuilt } from '../_helpers/vmctl.js';

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

function virsh(uri: string, ...args: string[]): string {
  return execFileSync('virsh', ['-c', uri, ...args], { encoding: 'utf8' });
}

describe('vmctl CLI', () => {
  let rig: RigEnv;
  let sshd: SshdInstance;
  let home: string;
  let sshUri: string;
  const domName = `vmctl-cli-${process.pid}`;
  let xmlFile: string;

  const userEnv = () => ({ HOME: home, SSH_AUTH_SOCK: '', LIBVIRT_DEFAULT_URI: '' });
  const knownHostsPath = () => join(home, '.ssh', 'known_hosts');

  beforeAll(async () => {
    ensureBuilt();
    rig = await ensureRig();
    // port 22 when free, so the URI is exactly qemu+ssh://root@127.0.0.1/system
    sshd = await startSshd((await portFree(22)) ? { port: 22 } : {});
    sshUri = sshd.port === 22 ? 'qemu+ssh://root@127.0.0.1/system' : `qemu+ssh://root@127.0.0.1:${sshd.port}/system`;
    home = mkdtempSync(join(tmpdir(), 'vmctl-home-'));
    mkdirSync(join(home, '.ssh'), { mode: 0o700 });
    copyFileSync(sshd.keyfile, join(home, '.ssh', 'id_ed25519'));
    // a defined (not running) domain the listing must show
    xmlFile = join(home, 'dom.xml');
    writeFileSync(xmlFile, tinyDomainXml({ name: domName, kernel: rig.tinyKernel, initrd: rig.tinyInitrd }));
    virsh('qemu:///system', 'define', xmlFile);
  });

  afterAll(async () => {
    try {
      virsh('qemu:///system', 'undefine', domName);
    } catch {
      /* already gone */
    }
    await sshd?.stop();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  it('lists VMs over ssh as JSON when the host key is known', async () => {
    writeFileSync(knownHostsPath(), readFileSync(sshd.knownHosts));
    const r = await vmctl(['list', '--all', '--connect', sshUri, '--json'], { env: userEnv() });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const vms = JSON.parse(r.stdout) as { name: string; state: string; uuid: string; vcpus: number }[];
    const mine = vms.find((v) => v.name === domName);
    expect(mine).toMatchObject({ name: domName, state: 'shutoff', vcpus: 1 });
    expect(mine!.uuid).toBe(virsh('qemu:///system', 'domuuid', domName).trim());
    // the same set of names virsh sees
    const virshNames = virsh('qemu:///system', 'list', '--all', '--name').split('\n').filter(Boolean).sort();
    expect(vms.map((v) => v.name).sort()).toEqual(virshNames);
  });

  it('refuses an unknown ssh host key with a one-line error naming the fix, and records nothing', async () => {
    rmSync(knownHostsPath(), { force: true });
    const r = await vmctl(['list', '--connect', sshUri], { env: userEnv() });
    expect(r.code).toBe(6);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/host key .* is unknown/);
    expect(lines[0]).toMatch(/ssh-keyscan/);
    expect(lines[0]).toMatch(/SHA256:/);
    expect(existsSync(knownHostsPath())).toBe(false);
  });

  it('refuses a changed host key even with --accept-host-key', async () => {
    const other = join(home, 'other_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const hostPattern = sshd.port === 22 ? '127.0.0.1' : `[127.0.0.1]:${sshd.port}`;
    writeFileSync(knownHostsPath(), `${hostPattern} ${readFileSync(`${other}.pub`, 'utf8').trim()}\n`);
    const r = await vmctl(['list', '--connect', sshUri, '--accept-host-key'], { env: userEnv() });
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/changed|does not match|mismatch/i);
  });

  it('accepts an unknown key once when told to, records it hashed, then verifies it strictly', async () => {
    rmSync(knownHostsPath(), { force: true });
    const first = await vmctl(['list', '--connect', sshUri, '--accept-host-key', '--json'], { env: userEnv() });
    expect(first.code).toBe(0);
    const kh = readFileSync(knownHostsPath(), 'utf8');
    expect(kh).toMatch(/^\|1\|/); // hashed entry
    expect(kh).toContain(sshd.hostKeyPub.split(' ')[1]!);
    const second = await vmctl(['list', '--connect', sshUri, '--json'], { env: userEnv() });
    expect(second.code).toBe(0);
    expect(JSON.parse(second.stdout)).toBeInstanceOf(Array);
  });

  it('prints client, libvirt and hypervisor versions on every transport', async () => {
    writeFileSync(knownHostsPath(), readFileSync(sshd.knownHosts));
    const daemon = /Running against daemon: (\S+)/.exec(virsh('qemu:///system', 'version', '--daemon'))![1];
    const hv = /Running hypervisor: QEMU (\S+)/.exec(virsh('qemu:///system', 'version'))![1];
    for (const uri of ['qemu:///system', sshUri, rig.tcpUri, rig.tlsUri]) {
      const r = await vmctl(['version', '--json', '--connect', uri], { env: userEnv() });
      expect(r.code, `${uri}: ${r.stderr}`).toBe(0);
      const v = JSON.parse(r.stdout) as { uri: string; client: { vmctl: string }; libvirt: { version: string }; hypervisor: { type: string; version: string } };
      expect(v.uri).toBe(uri);
      expect(v.client.vmctl).toBe(JSON.parse(readFileSync('package.json', 'utf8')).version);
      expect(v.libvirt.version).toBe(daemon);
      expect(v.hypervisor).toEqual({ type: 'QEMU', version: hv, number: expect.any(Number) });
    }
    const text = await vmctl(['version'], { env: { ...userEnv(), LIBVIRT_DEFAULT_URI: rig.tcpUri } });
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`libvirt:     ${daemon} (${rig.tcpUri})`);
  });

  it('keeps stdout pure JSON while logging JSON lines to stderr', async () => {
    const r = await vmctl(['list', '--json', '--log-level', 'debug', '--log-format', 'json'], { env: userEnv() });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toBeInstanceOf(Array);
    const logLines = r.stderr.trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string });
    expect(logLines.some((l) => l.msg === 'connection open')).toBe(true);
  });

  it('fails with one clear line and the right exit code on bad input', async () => {
    const refused = await vmctl(['list', '--connect', 'qemu+tcp://127.0.0.1:1/system'], { env: userEnv() });
    expect(refused.code).toBe(5);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/127\.0\.0\.1:1/);

    const badUri = await vmctl(['list', '--connect', 'qemu+carrierpigeon://x/system'], { env: userEnv() });
    expect(badUri.code).toBe(2);
    expect(badUri.stderr).toMatch(/^vmctl: .*carrierpigeon/);

    const unknownCmd = await vmctl(['frobnicate'], { env: userEnv() });
    expect(unknownCmd.code).toBe(2);

    const jsonErr = await vmctl(['list', '--json', '--connect', 'qemu+tcp://127.0.0.1:1/system'], { env: userEnv() });
    expect(jsonErr.code).toBe(5);
    expect(JSON.parse(jsonErr.stdout)).toMatchObject({ error: { code: 'CONNECTION' } });
  });
});
