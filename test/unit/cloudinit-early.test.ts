/**
 * The early seed files (vmctl/ on the seed) that the tuned image applies
 * before sshd: names, modes and content, derived from the same values as
 * user-data (so cloud-init finds the work done), and left out for users[0]
 * entries the early script cannot reproduce. The script itself runs in the
 * tuned image (test/e2e/cloudinit-boot.test.ts checks its result).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { buildSeedDocuments, EARLY_DIR, earlySeedFiles, generateHostKey, generateUserKey, type SeedInput, type SshKeyPair } from '../../src/core/guest/cloudinit.js';
import { userNetLease } from '../../src/core/vm/domain-xml.js';

let host: SshKeyPair;
let user: SshKeyPair;
beforeAll(() => {
  host = generateHostKey('root@early');
  user = generateUserKey('vmctl@early');
});

function input(over: Partial<SeedInput> = {}): SeedInput {
  return { hostname: 'web-1', instanceId: 'iid-5678', user: 'vmctl', authorizedKeys: [user.publicKey], hostKey: host, ...over };
}

function byName(files: readonly { name: string; content: string; mode: number }[]): Record<string, string> {
  return Object.fromEntries(files.map((f) => [f.name, f.content]));
}

describe('early seed files', () => {
  it('carry instance-id, hostname, the user, its keys and the host key, owner-only, in vmctl/', () => {
    const docs = buildSeedDocuments(input());
    expect(EARLY_DIR).toBe('vmctl');
    expect(docs.earlyFiles.map((f) => f.name)).toEqual([
      'instance-id',
      'hostname',
      'user',
      'groups',
      'shell',
      'gecos',
      'authorized_keys',
      'sudo',
      'ssh_host_ed25519_key',
      'ssh_host_ed25519_key.pub',
    ]);
    for (const f of docs.earlyFiles) expect(f.mode).toBe(0o600);
    const f = byName(docs.earlyFiles);
    expect(f['instance-id']).toBe('iid-5678\n');
    expect(f.hostname).toBe('web-1\n');
    expect(f.user).toBe('vmctl\n');
    expect(f.groups).toBe('adm,sudo\n');
    expect(f.shell).toBe('/bin/bash\n');
    expect(f.gecos).toBe('vmctl\n');
    expect(f.authorized_keys).toBe(`${user.publicKey}\n`);
    expect(f.sudo).toBe('ALL=(ALL) NOPASSWD:ALL\n');
  });

  it('hold byte for byte what user-data gives cloud-init (same host key, user, keys)', () => {
    const docs = buildSeedDocuments(input({ user: 'alice', authorizedKeys: [user.publicKey, generateUserKey('x').publicKey] }));
    const ud = YAML.parse(docs.userData, { version: '1.1' }) as {
      ssh_keys: { ed25519_private: string; ed25519_public: string };
      users: { name: string; gecos: string; groups: string[]; shell: string; ssh_authorized_keys: string[] }[];
    };
    const md = YAML.parse(docs.metaData, { version: '1.1' }) as Record<string, string>;
    const f = byName(docs.earlyFiles);
    expect(f.ssh_host_ed25519_key).toBe(ud.ssh_keys.ed25519_private);
    expect(f['ssh_host_ed25519_key.pub']).toBe(ud.ssh_keys.ed25519_public);
    expect(f.user).toBe(`${ud.users[0]!.name}\n`);
    expect(f.gecos).toBe(`${ud.users[0]!.gecos}\n`);
    expect(f.groups).toBe(`${ud.users[0]!.groups.join(',')}\n`);
    expect(f.shell).toBe(`${ud.users[0]!.shell}\n`);
    expect(f.authorized_keys).toBe(ud.users[0]!.ssh_authorized_keys.map((k) => `${k}\n`).join(''));
    expect(f['instance-id']).toBe(`${md['instance-id']}\n`);
    expect(f.hostname).toBe(`${md['local-hostname']}\n`);
    // the private key file is what ssh-keygen reads as the host key
    const dir = mkdtempSync(join(tmpdir(), 'vmctl-early-'));
    const keyFile = join(dir, 'key');
    writeFileSync(keyFile, f.ssh_host_ed25519_key!, { mode: 0o600 });
    const r = spawnSync('ssh-keygen', ['-y', '-f', keyFile], { encoding: 'utf8' });
    rmSync(dir, { recursive: true, force: true });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim().split(' ').slice(0, 2)).toEqual(host.publicKey.trim().split(' ').slice(0, 2));
  });

  it('leave the user to cloud-init when users[0] asks for more than the early script does', () => {
    for (const extra of [{ uid: 1500 }, { passwd: '$6$x' }, { lock_passwd: false }, { homedir: '/srv/u' }, { groups: ['adm', 'we;ird'] }, { gecos: 'Ünï' }, { shell: 'bash' }, { sudo: 'ALL=(ALL) ALL\nevil ALL=(ALL) ALL' }, { sudo: { x: 1 } }]) {
      const files = earlySeedFiles({
        instanceId: 'i',
        hostname: 'h',
        user: { name: 'vmctl', groups: ['adm'], shell: '/bin/bash', ...extra },
        authorizedKeys: [user.publicKey],
        hostKey: host,
      });
      const names = files.map((x) => x.name);
      expect(names, JSON.stringify(extra)).toEqual(['instance-id', 'hostname', 'ssh_host_ed25519_key', 'ssh_host_ed25519_key.pub']);
    }
    // comma-separated groups and defaults are fine
    const f = byName(earlySeedFiles({ instanceId: 'i', hostname: 'h', user: { name: 'bob', groups: 'adm, sudo' }, authorizedKeys: [user.publicKey], hostKey: host }));
    expect(f.groups).toBe('adm,sudo\n');
    expect(f.shell).toBe('/bin/bash\n');
    expect(f.gecos).toBe('bob\n');
    expect(f.sudo).toBeUndefined();
    const g = byName(earlySeedFiles({ instanceId: 'i', hostname: 'h', user: { name: 'bob', sudo: ['ALL=(ALL) NOPASSWD:/usr/bin/apt', 'ALL=(root) /bin/ls'] }, authorizedKeys: [user.publicKey], hostKey: host }));
    expect(g.sudo).toBe('ALL=(ALL) NOPASSWD:/usr/bin/apt\nALL=(root) /bin/ls\n');
  });

  it('carry the user-mode lease for eth0 only when network-config is exactly DHCP on eth0', () => {
    const lease = userNetLease([{ type: 'user' }])!;
    expect(lease).toEqual({ mac: '52:54:00:12:34:56', address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2' });
    const net = (over: Partial<SeedInput>) => byName(buildSeedDocuments(input({ userNetLease: lease, ...over })).earlyFiles).net;
    expect(net({})).toBe('eth0 52:54:00:12:34:56 10.0.2.15/24 10.0.2.2\n');
    // a lab's extra NICs (matched by MAC, renamed to eth1…) leave eth0 as it is
    expect(net({ extraNetworkConfig: { ethernets: { eth1: { match: { macaddress: '52:54:00:aa:bb:cc' }, 'set-name': 'eth1', dhcp4: false, addresses: ['10.10.0.5/24'] } } } })).toBeDefined();
    // anything else for eth0 is networkd's business
    expect(net({ extraNetworkConfig: { ethernets: { eth0: { addresses: ['192.168.1.5/24'] } } } })).toBeUndefined();
    expect(net({ extraNetworkConfig: { ethernets: { eth0: { dhcp6: true } } } })).toBeUndefined();
    expect(net({ extraNetworkConfig: { ethernets: { nic: { match: { macaddress: '52:54:00:aa:bb:cc' }, 'set-name': 'eth0' } } } })).toBeUndefined();
    expect(net({ extraNetworkConfig: { bonds: { bond0: { interfaces: ['eth0'] } } } })).toBeUndefined();
    expect(net({ userNetLease: undefined })).toBeUndefined();
  });

  it('know the lease of exactly one user-mode NIC, with its MAC or QEMU\'s first default one', () => {
    expect(userNetLease([{ type: 'user', mac: '52:54:00:AB:CD:EF' }])?.mac).toBe('52:54:00:ab:cd:ef');
    expect(userNetLease([{ type: 'network', mac: '52:54:00:00:00:01' }, { type: 'user' }])?.mac).toBe('52:54:00:12:34:56');
    expect(userNetLease([{ type: 'network' }])).toBeUndefined();
    expect(userNetLease([{ type: 'user' }, { type: 'user' }])).toBeUndefined();
    expect(() => earlySeedFiles({ instanceId: 'i', hostname: 'h', user: { name: 'bob' }, authorizedKeys: [user.publicKey], hostKey: host, network: { iface: 'eth0; rm', mac: '52:54:00:12:34:56', address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2' } })).toThrow(/invalid early network/);
  });
});
