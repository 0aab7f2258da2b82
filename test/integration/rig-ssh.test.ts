/**
 * The rig's netns host (mig1) as a "remote host over SSH": vmctl reaches its libvirtd with the
 * rig's ready-made qemu+ssh:// URI, and the ssh session lands inside that host's mount + network
 * namespace: its /etc/libvirt, its /run/libvirt/libvirt-sock, its loopback for direct-tcpip
 * forwards (where guests' user-mode port forwards on that host listen). Real parts only: the
 * rig (scripts/test-rig.sh, sshd + socat forwarder), the built CLI, ssh2 against that sshd.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureRigSshHost, type RigEnv, type RigSshHost } from '../_helpers/rig.js';
import { freePort } from '../_helpers/sshd.js';
import { tinyDomainXml } from '../_helpers/tiny-domain.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';

const { Client } = ssh2;

let rig: RigEnv;
let host: RigSshHost;
let home: string;
let client: InstanceType<typeof Client> | undefined;
const domName = `vmctl-rig-ssh-${process.pid}`;

function virsh(uri: string, ...args: string[]): string {
  return execFileSync('virsh', ['-q', '-c', uri, ...args], { encoding: 'utf8' });
}

/** The host key the rig's known_hosts pins for [127.0.0.1]:sshPort (plain, not hashed). */
function pinnedHostKey(): Buffer {
  const name = `[127.0.0.1]:${host.sshPort}`;
  const line = readFileSync(host.knownHosts, 'utf8')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find((f) => f[0] === name);
  if (!line || line.length < 3) throw new Error(`${host.knownHosts} has no line for ${name}`);
  return Buffer.from(line[2]!, 'base64');
}

function connectSsh(): Promise<InstanceType<typeof Client>> {
  const pinned = pinnedHostKey();
  return new Promise((resolve, reject) => {
    const c = new Client();
    c.once('ready', () => resolve(c));
    c.once('error', (err) => reject(new Error(`ssh root@127.0.0.1:${host.sshPort}: ${err.message}`)));
    c.connect({
      host: '127.0.0.1',
      port: host.sshPort,
      username: 'root',
      privateKey: readFileSync(host.sshKey),
      hostVerifier: (key: Buffer) => key.equals(pinned),
      readyTimeout: 15_000,
    });
  });
}

function exec(command: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    client!.exec(command, (err, ch) => {
      if (err) return reject(err);
      let stdout = '';
      let stderr = '';
      ch.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
      ch.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
      ch.on('close', (code: number | null) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  });
}

/** Open a direct-tcpip channel to 127.0.0.1:port on the far side; resolve with all it sends. */
function forwardRead(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    client!.forwardOut('127.0.0.1', 0, '127.0.0.1', port, (err, ch) => {
      if (err) return reject(err);
      let got = '';
      ch.on('data', (d: Buffer) => (got += d.toString('utf8')));
      ch.on('close', () => resolve(got));
      ch.end();
    });
  });
}

/** Connect from the root network namespace; resolve with the errno code, or 'connected'. */
function rootConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

function netnsListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', host.netns, 'ss', '-Hltn', `sport = :${port}`], (err, stdout) =>
      resolve(!err && stdout.trim() !== ''),
    );
  });
}

beforeAll(async () => {
  ensureBuilt();
  ({ rig, host } = await ensureRigSshHost());
  home = mkdtempSync(join(tmpdir(), 'vmctl-rig-ssh-home-'));
  // a defined domain on the netns host only: `vmctl list` over ssh must show it
  const xml = join(home, 'dom.xml');
  writeFileSync(xml, tinyDomainXml({ name: domName, kernel: rig.tinyKernel, initrd: rig.tinyInitrd }));
  virsh(host.unixUri, 'define', xml);
  client = await connectSsh();
});

afterAll(() => {
  client?.end();
  try {
    if (host) virsh(host.unixUri, 'undefine', domName);
  } catch {
    /* already gone */
  }
  if (home) rmSync(home, { recursive: true, force: true });
});

describe('rig netns host over ssh', () => {
  it('describes itself: a qemu+ssh URI with keyfile= and known_hosts= on a root-netns loopback port', () => {
    expect(host.netns).not.toBe('');
    expect(host.sshUri).toBe(`qemu+ssh://root@127.0.0.1:${host.sshPort}/system?keyfile=${host.sshKey}&known_hosts=${host.knownHosts}`);
    const hostKey = readFileSync(host.sshHostKey, 'utf8').trim().split(/\s+/)[1]!;
    expect(pinnedHostKey().toString('base64')).toBe(hostKey);
  });

  // HOME is an empty throwaway dir and there is no agent: only the URI's keyfile/known_hosts count
  const userEnv = () => ({ HOME: home, SSH_AUTH_SOCK: '', LIBVIRT_DEFAULT_URI: '' });

  it('vmctl list --json over ssh shows the netns host\'s domains', async () => {
    const r = await vmctl(['list', '--all', '--json', '--connect', host.sshUri], { env: userEnv() });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const vms = JSON.parse(r.stdout) as { name: string; state: string; uuid: string }[];
    const mine = vms.find((v) => v.name === domName);
    expect(mine, `${domName} (defined on ${host.name}) missing from ${r.stdout}`).toMatchObject({ name: domName, state: 'shutoff' });
    expect(mine!.uuid).toBe(virsh(host.unixUri, 'domuuid', domName).trim());
    expect(vms.map((v) => v.name).sort()).toEqual(virsh(host.unixUri, 'list', '--all', '--name').split('\n').filter(Boolean).sort());
    // and it is not some other libvirtd that happens to be reachable
    expect(virsh(rig.unixUri, 'list', '--all', '--name')).not.toContain(domName);
  });

  it('vmctl version --json over ssh', async () => {
    const r = await vmctl(['version', '--json', '--connect', host.sshUri], { env: userEnv() });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const v = JSON.parse(r.stdout) as { uri: string; libvirt: { version: string; number: number }; hypervisor: { type: string } };
    expect(v.uri).toBe(host.sshUri);
    expect(v.libvirt.number).toBeGreaterThan(0);
    expect(v.hypervisor.type).toBe('QEMU');
  });

  it('the ssh session runs inside the host\'s network and mount namespaces', async () => {
    const link = await exec('ip -o link');
    expect(link.code, link.stderr).toBe(0);
    const ifaces = link.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(':')[1]!.trim().split('@')[0]);
    // its loopback and its leg of the rig network (not the root netns's interfaces)
    expect(ifaces).toEqual(['lo', 'eth0']);

    // the same network namespace as /run/netns/NETNS (an nsfs inode)
    const ns = await exec('stat -L -c %i /proc/self/ns/net');
    expect(ns.code, ns.stderr).toBe(0);
    expect(Number(ns.stdout.trim())).toBe(statSync(`/run/netns/${host.netns}`).ino);

    // its private /etc/libvirt: the rig host's host_uuid
    const conf = await exec('cat /etc/libvirt/libvirtd.conf');
    expect(conf.code, conf.stderr).toBe(0);
    const uuid = /^host_uuid = "([^"]+)"/m.exec(conf.stdout)?.[1];
    expect(uuid).toBe(readFileSync(join(host.dir, 'host_uuid'), 'utf8').trim());
    expect(uuid).not.toBe(rig.hostUuid);

    // and /run/libvirt/libvirt-sock there is that host's libvirtd
    const dom = await exec(`virsh -q -c qemu:///system domuuid ${domName}`);
    expect(dom.code, dom.stderr).toBe(0);
    expect(dom.stdout.trim()).toBe(virsh(host.unixUri, 'domuuid', domName).trim());
  });

  describe('direct-tcpip forwards reach the netns loopback, not the root one', () => {
    let port: number;
    let listener: ChildProcess | undefined;
    let rootServer: Server | undefined;
    let rootPort: number;
    const marker = `vmctl-netns-only-${process.pid}`;

    beforeAll(async () => {
      port = await freePort(); // free in the root netns; the netns's lo only has :22, :16509, :16514
      listener = spawn(
        'ip',
        ['netns', 'exec', host.netns, 'socat', `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, `SYSTEM:echo ${marker}`],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      listener.stderr!.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
      const deadline = Date.now() + 10_000;
      while (!(await netnsListening(port))) {
        if (listener.exitCode !== null || Date.now() > deadline) {
          throw new Error(`socat in netns ${host.netns} did not listen on 127.0.0.1:${port}: ${stderr}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      // and a listener only in the root netns
      rootServer = createServer((s) => {
        s.on('error', () => undefined); // rootConnect() resets its probe connection
        s.end('root-netns\n');
      });
      await new Promise<void>((resolve, reject) => {
        rootServer!.once('error', reject);
        rootServer!.listen(0, '127.0.0.1', () => resolve());
      });
      rootPort = (rootServer.address() as { port: number }).port;
    });

    afterAll(async () => {
      listener?.kill('SIGTERM');
      await new Promise<void>((resolve) => rootServer?.close(() => resolve()) ?? resolve());
    });

    it('a forward to 127.0.0.1:PORT reaches the listener that runs only inside the netns', async () => {
      expect(await rootConnect(port)).toBe('ECONNREFUSED');
      expect(await forwardRead(port)).toBe(`${marker}\n`);
    });

    it('a forward to a port that listens only in the root netns is refused', async () => {
      expect(await rootConnect(rootPort)).toBe('connected');
      const err = await forwardRead(rootPort).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err?.message).toMatch(/connect failed|refused/i);
    });
  });
});
