/**
 * The rig network (scripts/test-rig.sh): the netns hosts mig1 (10.254.0.11) and mig2
 * (10.254.0.12) reach each other through veth pairs on a bridge in netns vmctl-rig-net, and
 * nothing of it exists in the root netns. Real parts only: the rig's libvirtds, virsh, iproute2,
 * and a live migration of the tiny guest from mig1 to mig2 over that network.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLBuilder, XMLParser } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureRig, repoRoot, rigSshHost, waitForFileContains, type RigEnv, type RigSshHost } from '../_helpers/rig.js';
import { tinyDomainXml } from '../_helpers/tiny-domain.js';

let rig: RigEnv;
let mig1: RigSshHost;
let mig2: RigSshHost;
let netNs: string;
let work: string;
const domName = `vmctl-tiny-mig-${process.pid}`;

/** Runs a command; resolves with stdout, rejects with a message quoting stderr. */
function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd: repoRoot, timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const why = err.killed ? `timed out after ${timeoutMs} ms` : `failed (${err.message.split('\n')[0]})`;
        reject(new Error(`${cmd} ${args.join(' ')} ${why}\n${String(stderr).trim()}`));
      } else resolve(String(stdout));
    });
  });
}

const virsh = (uri: string, ...args: string[]): Promise<string> => run('virsh', ['-q', '-c', uri, ...args], 120_000);
/** virsh from inside a host's network namespace (the client's mount namespace stays the root one) */
const virshIn = (host: RigSshHost, uri: string, ...args: string[]): Promise<string> =>
  run('ip', ['netns', 'exec', host.netns, 'virsh', '-q', '-c', uri, ...args]);

function hostUuidOf(capsXml: string): string {
  const m = /<host>\s*<uuid>([0-9a-f-]{36})<\/uuid>/.exec(capsXml);
  if (!m) throw new Error(`no <host><uuid> in capabilities:\n${capsXml.slice(0, 500)}`);
  return m[1]!;
}
const expectedUuid = (h: RigSshHost): string => readFileSync(join(h.dir, 'host_uuid'), 'utf8').trim();

/** The tiny guest with its serial console in a file (append: the destination's qemu continues it). */
function tinyXmlWithSerialFile(serialLog: string): string {
  const opts = { ignoreAttributes: false, attributeNamePrefix: '@_' };
  const doc = new XMLParser(opts).parse(
    tinyDomainXml({ name: domName, kernel: rig.tinyKernel, initrd: rig.tinyInitrd, cmdline: rig.tinyCmdline }),
  ) as { domain: { devices: Record<string, unknown> } };
  doc.domain.devices['serial'] = { '@_type': 'file', source: { '@_path': serialLog, '@_append': 'on' }, target: { '@_port': 0 } };
  delete doc.domain.devices['console'];
  return new XMLBuilder({ ...opts, format: true, suppressEmptyNode: true }).build(doc) as string;
}

beforeAll(async () => {
  rig = await ensureRig();
  mig1 = rigSshHost(rig, 'mig1');
  mig2 = rigSshHost(rig, 'mig2');
  netNs = rig.raw['RIG_NET_NETNS'] ?? '';
  if (netNs === '') throw new Error('rig: scripts/test-rig.sh env did not print RIG_NET_NETNS');
  work = mkdtempSync(join(tmpdir(), 'vmctl-rig-net-'));
  chmodSync(work, 0o755); // the hosts' qemu (not root) writes the serial log here
});

afterAll(async () => {
  if (!rig) return;
  for (const h of [mig1, mig2]) {
    if (!h) continue;
    await virsh(h.unixUri, 'destroy', domName).catch(() => undefined);
    await virsh(h.unixUri, 'undefine', domName).catch(() => undefined);
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('rig network', () => {
  it('gives each netns host its address on eth0, bridged in the rig network netns', async () => {
    expect(mig1.addr).toBe('10.254.0.11');
    expect(mig2.addr).toBe('10.254.0.12');
    for (const h of [mig1, mig2]) {
      const addrs = await run('ip', ['-n', h.netns, '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
      expect(addrs).toContain(` ${h.addr}/24 `);
      const peer = await run('ip', ['-n', netNs, '-o', 'link', 'show', `vr-${h.name}`]);
      expect(peer).toContain(`master ${rig.raw['RIG_NET_BRIDGE']}`);
    }
  });

  it("reaches mig2's libvirtd over tcp and tls from inside mig1's netns (and mig1's from mig2's)", async () => {
    const caps = await virshIn(mig1, `qemu+tcp://${mig2.addr}/system`, 'capabilities');
    expect(hostUuidOf(caps)).toBe(expectedUuid(mig2));
    const back = await virshIn(mig2, `qemu+tcp://${mig1.addr}/system`, 'capabilities');
    expect(hostUuidOf(back)).toBe(expectedUuid(mig1));
    // TLS: the server cert of mig2 names 10.254.0.12 (and mig2), signed by the rig CA
    const tlsUri = `qemu+tls://${mig2.addr}/system?pkipath=${rig.pkiPath}`;
    expect(hostUuidOf(await virshIn(mig1, tlsUri, 'capabilities'))).toBe(expectedUuid(mig2));
    // by name, inside mig1's own namespaces (its /etc/hosts and hostname): tls://mig2
    const inMig1 = await run(join(repoRoot, 'scripts', 'test-rig.sh'), [
      'exec', 'mig1', 'sh', '-c',
      `hostname && getent hosts mig2 && virsh -q -c 'qemu+tls://mig2/system?pkipath=${rig.pkiPath}' hostname`,
    ]);
    const [hostname, resolved, remote] = inMig1.split('\n').map((l) => l.trim());
    expect(hostname).toBe('mig1');
    expect(resolved?.split(/\s+/)).toEqual([mig2.addr, 'mig2']);
    expect(remote).toBe('mig2');
  });

  it('is not part of the root netns: no address, route or link of the rig network there', async () => {
    // Deliberately no connect() from the root netns: this machine has a default route, so a SYN
    // to 10.254.0.12 would leave through the real interface (network rule: never). Instead check
    // that nothing in the root netns could carry it to the rig network.
    const addrs = await run('ip', ['-4', '-o', 'addr', 'show']);
    expect(addrs).not.toMatch(/inet 10\.254\.0\./);
    expect((await run('ip', ['route', 'show', 'root', '10.254.0.0/16'])).trim()).toBe('');
    const links = await run('ip', ['-o', 'link', 'show']);
    for (const dev of [rig.raw['RIG_NET_BRIDGE']!, `vr-${mig1.name}`, `vr-${mig2.name}`]) {
      expect(links).not.toMatch(new RegExp(`^\\d+: ${dev}[@:]`, 'm'));
    }
    const via = await run('ip', ['route', 'get', mig2.addr!]).catch((e: Error) => e.message);
    expect(via).not.toMatch(/dev (rigbr0|vr-)/);
  });

  it('live-migrates the tiny guest from mig1 to mig2 over the rig network (p2p)', { timeout: 240_000 }, async () => {
    const serialLog = join(work, `${domName}.serial.log`);
    const xmlPath = join(work, `${domName}.xml`);
    writeFileSync(xmlPath, tinyXmlWithSerialFile(serialLog));
    await virsh(mig1.unixUri, 'define', xmlPath);
    await virsh(mig1.unixUri, 'start', domName);
    await waitForFileContains(serialLog, rig.tinyMarker, 120_000);
    const uuid = (await virsh(mig1.unixUri, 'domuuid', domName)).trim();

    const t0 = Date.now();
    await run(
      'virsh',
      ['-c', mig1.unixUri, 'migrate', '--live', '--p2p', '--verbose', domName,
        `qemu+tcp://${mig2.addr}/system`, '--migrateuri', `tcp://${mig2.addr}`],
      180_000,
    );
    const took = Date.now() - t0;
    expect(took).toBeLessThan(180_000);

    expect((await virsh(mig2.unixUri, 'domstate', domName)).trim()).toBe('running');
    expect((await virsh(mig2.unixUri, 'domuuid', domName)).trim()).toBe(uuid);
    expect((await virsh(mig1.unixUri, 'list', '--name')).split('\n').map((s) => s.trim())).not.toContain(domName);
    expect((await virsh(mig1.unixUri, 'domstate', domName)).trim()).toBe('shut off'); // still defined there

    // the guest on mig2 is the same live guest: ACPI shutdown reaches its init, which prints the
    // poweroff marker to the (appended) serial log and powers off
    await virsh(mig2.unixUri, 'shutdown', domName);
    await waitForFileContains(serialLog, rig.tinyPoweroffMarker, 60_000);
  });
});
