/**
 * The real thing: boot vmctl's default image under TCG with a seed ISO built
 * by src/core/cloudinit.ts, and reach it with src/core/ssh.ts.
 *
 * QEMU is started directly (no libvirt): a qcow2 overlay of
 * .cache/images/debian-12.qcow2 (built with scripts/build-image.sh when
 * missing — never skipped), direct kernel boot with the manifest's
 * kernel/initrd/cmdline, user-mode networking with restrict=on and only
 * hostfwd=tcp:127.0.0.1:PORT-:22 (loopback, no other network), the seed ISO
 * as an IDE cdrom. Then: waitForSsh with the host key pinned before boot
 * (the guest must present exactly the injected key), the hostname from
 * meta-data, cloud-init done without errors, odd strings delivered intact,
 * runcmd (string and argv forms), the network-config (eth0 by DHCP, rendered
 * for networkd), the root filesystem grown to the overlay's bigger size
 * (growpart/resizefs), no password logins; on the tuned image also that the
 * early unit applied the seed before sshd and cloud-init ran after it.
 * Prints boot→sshd and boot→cloud-init-done timings.
 *
 * The image is $VMCTL_CACHE_DIR/images/debian-12.qcow2 (default: the repo's
 * .cache), so a tuned or stock build elsewhere can be tested without touching
 * the shared one.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { userNetLease } from '../../src/core/vm/domain-xml.js';
import { buildSeedDocuments, ensureVmKeys, generateHostKey, hostPatternFor, pinHostKey, writeSeedIso } from '../../src/core/guest/cloudinit.js';
import { VmctlError } from '../../src/core/errors.js';
import { connectGuest, guestCapture, guestExec, waitForCloudInit, waitForSsh, type GuestConnection, type SshAttempt } from '../../src/core/guest/ssh.js';
import { freePort } from '../_helpers/sshd.js';
import { SSHD_READY_MARKER } from '../../src/core/guest/console.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const IMAGE_DIR = join(process.env.VMCTL_CACHE_DIR || join(repoRoot, '.cache'), 'images');
const IMAGE = join(IMAGE_DIR, 'debian-12.qcow2');
// the overlay is bigger than the image (3 GiB): cloud-init must grow the root filesystem
const DISK_BYTES = 4 * 1024 ** 3;
const MANIFEST = `${IMAGE}.json`;

interface Manifest {
  profile?: 'tuned' | 'stock';
  virtualSize: number;
  boot: { kernel: string; initrd: string; cmdline: string };
  guest: { defaultUser: string; seedVolumeLabel: string };
}

// strings that must reach the guest byte for byte through YAML → PyYAML → cloud-init
const ODD_FILE = 'yes\n<<: *anchor\nkey: "value" # not a comment\n\'single\' `tick` $HOME \\back\\slash\n- dash\n= on ~ null 0755 1:20\nünï 😀\n';
const ODD_ARG = `x: "y" 'z' #w $(no) \`no\` = <<`;

let work: string;
let qemu: ChildProcess | undefined;
let conn: GuestConnection | undefined;

function log(msg: string): void {
  process.stdout.write(`[e2e cloudinit-boot] ${msg}\n`);
}

async function stopQemu(): Promise<void> {
  const q = qemu;
  qemu = undefined;
  if (!q || q.exitCode !== null || q.signalCode !== null) return;
  const exited = new Promise<void>((r) => q.once('exit', () => r()));
  q.kill('SIGTERM');
  const t = setTimeout(() => q.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

beforeAll(() => {
  if (!existsSync(MANIFEST)) {
    log(`${MANIFEST} missing: building it with scripts/build-image.sh debian-12`);
    execFileSync('bash', [join(repoRoot, 'scripts', 'build-image.sh'), 'debian-12', '--out', IMAGE], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  expect(existsSync(IMAGE), `${IMAGE} missing after the build`).toBe(true);
  work = mkdtempSync(join(tmpdir(), 'vmctl-e2e-cloudinit-'));
}, 1_800_000);

afterAll(async () => {
  conn?.close();
  await stopQemu();
  if (work) rmSync(work, { recursive: true, force: true });
});

it('boots the default image with vmctl’s seed and reaches it over strictly verified ssh', async () => {
  const manifest = JSON.parse(readFileSync(MANIFEST, 'utf8')) as Manifest;
  const imageDir = IMAGE_DIR;
  expect(manifest.virtualSize).toBeLessThan(DISK_BYTES);
  const user = manifest.guest.defaultUser;
  expect(manifest.guest.seedVolumeLabel).toBe('cidata');

  // client state, seed, disk
  const keys = ensureVmKeys(join(work, 'state'));
  const hostname = `e2e-${randomBytes(3).toString('hex')}`;
  const docs = buildSeedDocuments({
    hostname,
    instanceId: randomUUID(),
    user,
    authorizedKeys: keys.authorizedKeys,
    hostKey: keys.hostKey,
    // what vmctl create passes for its user-mode NIC (QEMU's first lease, the default MAC)
    userNetLease: userNetLease([{ type: 'user' }])!,
    runcmd: [['sh', '-c', 'printf "%s\\n" "$1" > /run/vmctl-argv', 'sh', ODD_ARG], "echo 'a: b' > /run/vmctl-runcmd"],
    extraUserData: { write_files: [{ path: '/run/vmctl-odd', content: ODD_FILE, permissions: '0644' }] },
  });
  await writeSeedIso(docs, join(work, 'seed.iso'));
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', IMAGE, join(work, 'disk.qcow2'), String(DISK_BYTES)]);
  const port = await freePort();
  pinHostKey(keys.stateDir, hostPatternFor('127.0.0.1', port), keys.hostKey.publicKey);

  // boot
  const consoleLog = join(work, 'console.log');
  const t0 = Date.now();
  qemu = spawn(
    'qemu-system-x86_64',
    [
      '-name', 'vmctl-e2e-cloudinit',
      '-machine', 'pc,accel=tcg',
      '-smp', '1',
      '-m', '1024',
      '-nodefaults', '-display', 'none', '-vga', 'none', '-no-user-config',
      '-kernel', join(imageDir, manifest.boot.kernel),
      '-initrd', join(imageDir, manifest.boot.initrd),
      '-append', manifest.boot.cmdline,
      '-drive', `file=${join(work, 'disk.qcow2')},format=qcow2,if=virtio,discard=unmap`,
      '-drive', `file=${join(work, 'seed.iso')},format=raw,media=cdrom,if=ide,readonly=on`,
      '-netdev', `user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:${port}-:22`,
      '-device', 'virtio-net-pci,netdev=n0',
      '-device', 'virtio-rng-pci',
      '-serial', `file:${consoleLog}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let qemuErr = '';
  qemu.stderr!.on('data', (d: Buffer) => (qemuErr += d.toString()));
  const qemuGone = new AbortController();
  qemu.once('exit', (code, sig) => qemuGone.abort(new Error(`qemu exited (${code ?? sig}): ${qemuErr.trim()}`)));
  const consoleTail = (): string => (existsSync(consoleLog) ? readFileSync(consoleLog, 'utf8').split('\n').slice(-30).join('\n') : '(no console log)');

  try {
    // sshd with exactly the injected host key, login with the per-VM user key
    const attempts: SshAttempt[] = [];
    let tBanner: number | undefined;
    try {
      conn = await waitForSsh(
        { host: '127.0.0.1', port, user, privateKey: keys.userKey!.privateKey, knownHostsFile: keys.knownHostsFile, timeoutMs: 30_000 },
        {
          timeoutMs: 900_000,
          intervalMs: 1000,
          signal: qemuGone.signal,
          onAttempt: (a) => {
            attempts.push(a);
            if (tBanner === undefined && (a.stage === 'auth' || a.stage === 'handshake' || a.stage === 'ready')) tBanner = Date.now() - t0;
          },
        },
      );
    } catch (err) {
      log(`ssh never became ready: ${(err as Error).message}\n${consoleTail()}`);
      throw err;
    }
    const tSsh = Date.now() - t0;
    const stages = attempts.reduce<string[]>((acc, a) => (acc.at(-1) === a.stage ? acc : [...acc, a.stage]), []);
    log(`boot → sshd banner ${((tBanner ?? tSsh) / 1000).toFixed(1)} s, boot → ssh login ${(tSsh / 1000).toFixed(1)} s (${attempts.length} attempts: ${stages.join(' → ')})`);
    expect(conn.hostKey.fingerprint).toBe(keys.hostKey.fingerprint);

    // the guest holds exactly the injected host key, and only it
    const pubs = await guestCapture(conn, "sudo -n sh -c 'cat /etc/ssh/ssh_host_*_key.pub'");
    expect(pubs.code, pubs.stderr).toBe(0);
    expect(pubs.stdout.trim().split('\n')).toEqual([keys.hostKey.publicKey]);
    const sum = await guestCapture(conn, 'sudo -n sha256sum /etc/ssh/ssh_host_ed25519_key');
    expect(sum.stdout.split(' ')[0]).toBe(createHash('sha256').update(keys.hostKey.privateKey).digest('hex'));

    // a different pin for the same address is refused by the real guest
    const otherState = join(work, 'other-state');
    pinHostKey(otherState, hostPatternFor('127.0.0.1', port), generateHostKey('impostor').publicKey);
    const mismatch = await connectGuest({
      host: '127.0.0.1',
      port,
      user,
      privateKey: keys.userKey!.privateKey,
      knownHostsFile: join(otherState, 'known_hosts'),
    }).then(
      (c) => {
        c.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(mismatch).toBeInstanceOf(VmctlError);
    expect((mismatch as VmctlError).code).toBe('HOST_KEY');


    // cloud-init finishes cleanly
    const ci = await waitForCloudInit(conn, { timeoutMs: 900_000 });
    const tCi = Date.now() - t0;
    log(`boot → cloud-init done ${(tCi / 1000).toFixed(1)} s (status ${ci.status}, datasource ${ci.datasource ?? '?'})`);
    // the image said on its serial console that sshd was up (what vmctl create watches for)
    expect(readFileSync(consoleLog, 'utf8')).toContain(SSHD_READY_MARKER);
    expect(ci.errors).toEqual([]);
    expect(ci.status).toBe('done');
    expect(ci.exitCode).toBe(0);

    // hostname from meta-data (read once cloud-init is done: on the tuned image the early unit
    // set it before sshd, and cloud-init's set_hostname rewrites the file in place while it runs)
    const chunks: Buffer[] = [];
    const out = new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
      },
    });
    expect(await guestExec(conn, 'cat /etc/hostname', { stdout: out })).toBe(0);
    expect(Buffer.concat(chunks).toString()).toBe(`${hostname}\n`);

    // values that went through YAML arrive intact
    expect((await guestCapture(conn, 'cat /run/vmctl-odd')).stdout).toBe(ODD_FILE);
    expect((await guestCapture(conn, 'cat /run/vmctl-argv')).stdout).toBe(`${ODD_ARG}\n`);
    expect((await guestCapture(conn, 'cat /run/vmctl-runcmd')).stdout).toBe('a: b\n');
    expect((await guestCapture(conn, 'cat /etc/hostname; id -un; sudo -n id -un')).stdout).toBe(`${hostname}\n${user}\nroot\n`);
    expect((await guestCapture(conn, 'id -Gn')).stdout.trim().split(' ').sort()).toEqual(['adm', 'sudo', user].sort());

    // growpart/resizefs: the root filesystem fills the 4 GiB disk (the image is 3 GiB)
    const df = await guestCapture(conn, 'df -B1 --output=size / | tail -1');
    expect(Number(df.stdout.trim())).toBeGreaterThan(manifest.virtualSize + 512 * 1024 ** 2);

    // network-config: eth0 configured by DHCP through networkd from the rendered file
    const net = await guestCapture(conn, 'ip -4 -o addr show dev eth0; cat /etc/systemd/network/10-cloud-init-eth0.network');
    expect(net.stdout).toContain('inet 10.0.2.15/24');
    expect(net.stdout).toMatch(/^Name=eth0$/m);
    expect(net.stdout).toMatch(/^DHCP=ipv4$/m);

    // keys only: sshd refuses passwords and keyboard-interactive; the user has no usable password
    const sshdT = await guestCapture(conn, 'sudo -n sshd -T');
    expect(sshdT.stdout).toMatch(/^passwordauthentication no$/m);
    expect(sshdT.stdout).toMatch(/^kbdinteractiveauthentication no$/m);
    expect(sshdT.stdout).toMatch(/^permitrootlogin no$/m);
    expect((await guestCapture(conn, `sudo -n passwd -S ${user} | cut -d' ' -f2`)).stdout.trim()).toBe('L');

    // every unit's ordering is consistent (systemd breaks a cycle by dropping some job)
    const cycles = await guestCapture(conn, 'sudo -n journalctl -b -o cat | grep -c "ordering cycle" || true');
    expect(cycles.stdout.trim()).toBe('0');

    if (manifest.profile === 'tuned') {
      // the early unit applied the seed before sshd; cloud-init ran afterwards, in one process
      // (cloud-init is done once its result.json is written; the unit running it ends right after)
      const early = await guestCapture(
        conn,
        'i=0; while ! systemctl -q is-active vmctl-cloud-init.service && [ $i -lt 150 ]; do sleep 0.2; i=$((i+1)); done; ' +
          'systemctl is-active vmctl-seed-early.service vmctl-cloud-init.service; sudo -n journalctl -b -o cat -u vmctl-seed-early.service',
      );
      expect(early.stdout).toMatch(/^active\nactive\n/);
      expect(early.stdout).toContain('vmctl-seed-early: applied seed for instance');
      expect(early.stdout).not.toMatch(/ignoring|could not configure|is not the NIC/);
      // QEMU's lease was on eth0 before sshd; networkd's DHCP took it over (a lease's lifetime, not
      // the early 120 s), kept in between by the runtime drop-in; the late half ran and unmounted the
      // seed; the sudo bridge is gone now that cloud-init wrote the user's rules
      const after = await guestCapture(
        conn,
        'systemctl is-active vmctl-seed-late.service; cat /run/systemd/network/10-cloud-init-eth0.network.d/90-vmctl-early.conf; ' +
          'ip -4 -o addr show dev eth0; grep -c " /run/vmctl-seed " /proc/mounts || true; sudo -n ls /etc/sudoers.d',
      );
      expect(after.stdout).toMatch(/^active\n/);
      // (this test's seed is an IDE cdrom, found only after udev's coldplug: by then networkd may
      // have eth0 up already, and the early unit leaves it alone; vmctl create's virtio-scsi seed
      // gets the early lease, which test/e2e/vm-lifecycle.test.ts checks)
      if (early.stdout.includes("eth0: 10.0.2.15/24 via 10.0.2.2 (QEMU's lease) before sshd")) {
        expect(after.stdout).toMatch(/^KeepConfiguration=dhcp$/m);
      } else {
        expect(early.stdout).toContain('eth0 is up already: networkd configures it');
      }
      const lft = /inet 10\.0\.2\.15\/24 .*valid_lft (\d+)sec/.exec(after.stdout);
      expect(lft, after.stdout).not.toBeNull();
      expect(Number(lft![1])).toBeGreaterThan(120);
      expect(after.stdout).toMatch(/^0$/m);
      expect(after.stdout).toContain('90-cloud-init-users');
      expect(after.stdout).not.toContain('80-vmctl-early');
      const order = await guestCapture(conn, 'systemctl show -p ActiveEnterTimestampMonotonic --value vmctl-seed-early.service ssh.service vmctl-cloud-init.service');
      // (systemctl show prints one value per unit, separated by blank lines)
      const [tEarly, tSshd, tCloudInit] = order.stdout.trim().split(/\s+/).map(Number);
      expect(tEarly).toBeGreaterThan(0);
      expect(tEarly).toBeLessThan(tSshd!);
      expect(tSshd).toBeLessThan(tCloudInit!);
      // the unit starts early (importing cloud-init overlaps the boot) but its first stage only once sshd ran
      const local = await guestCapture(conn, "sudo -n grep -m1 \"running 'init-local'\" /var/log/cloud-init.log");
      const up = /Up ([0-9.]+) seconds/.exec(local.stdout);
      expect(up, local.stdout).not.toBeNull();
      expect(Number(up![1]) * 1e6).toBeGreaterThan(tSshd!);
    }
  } finally {
    conn?.close();
    conn = undefined;
    await stopQemu();
  }
}, 1_800_000);
