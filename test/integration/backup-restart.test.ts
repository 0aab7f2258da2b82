/**
 * libvirtd restarted under a running `vmctl backup` (rig host1, the tiny guest with a 4 GiB data
 * disk holding 64 MiB): the backup, a full one pulled from the job's NBD export, is held at its
 * mid-download fault point while host1's daemon is stopped and started again. The command fails
 * with one line naming the lost connection, undoes what it made once the daemon is back (the job,
 * the checkpoint, the scratch volume, the socket directory, the partial point), the guest runs on,
 * and the next backup works.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureRig, repoRoot, type RigEnv } from '../_helpers/rig.js';
import { ensureVmctlPool } from '../_helpers/migrate-rig.js';
import { defineTinyDataGuest } from '../_helpers/tiny-data-guest.js';
import { ensureBuilt, startVmctl, vmctl } from '../_helpers/vmctl.js';

const tag = `tbr-${process.pid.toString(36)}`;
const VM = `${tag}-vm`;
const MiB = 1024 * 1024;

describe('libvirtd restarted during a backup (rig host1, tiny guest)', () => {
  let rig: RigEnv;
  let uri: string;
  let work: string;
  let env: NodeJS.ProcessEnv;
  const virsh = (...args: string[]) => execFileSync('virsh', ['-q', '-c', uri, ...args], { encoding: 'utf8' });
  const lines = (s: string) => s.split('\n').map((l) => l.trim()).filter(Boolean);
  const volumes = () => lines(virsh('vol-list', 'vmctl')).map((l) => l.split(/\s+/)[0]!);
  const set = () => join(work, 'set');
  const nbdDir = `/run/vmctl/${tag}-nbd`;

  beforeAll(async () => {
    ensureBuilt();
    rig = await ensureRig();
    uri = rig.unixUri;
    await ensureVmctlPool(uri);
    work = mkdtempSync(join(tmpdir(), 'vmctl-bakrestart-'));
    env = { VMCTL_DATA_DIR: join(work, 'data'), VMCTL_CACHE_DIR: join(repoRoot, '.cache'), LIBVIRT_DEFAULT_URI: uri, VMCTL_NBD_DIR: nbdDir };
    defineTinyDataGuest(virsh, { tag, vm: VM, work, writes: ['write -P 0x33 0 64M'] });
  }, 300_000);

  afterAll(() => {
    if (!uri) return;
    try {
      virsh('destroy', VM);
    } catch {
      /* not running */
    }
    try {
      virsh('undefine', VM, '--checkpoints-metadata');
    } catch {
      /* gone */
    }
    for (const v of volumes().filter((n) => n.startsWith(tag) || n.includes(`-${tag}-`))) virsh('vol-delete', v, '--pool', 'vmctl');
    if (work) rmSync(work, { recursive: true, force: true });
    rmSync(nbdDir, { recursive: true, force: true });
  });

  const checkpoints = () => lines(virsh('checkpoint-list', VM, '--name'));
  /** `vmctl backup` held with its job running (its export, its new checkpoint, its scratch volume) */
  const startHeld = async () => {
    const before = checkpoints();
    const child = startVmctl(['backup', VM, '--to', set(), '--progress', 'plain'], { ...env, VMCTL_FAULT: 'backup:mid-download:sleep=4000' });
    await child.waitFor('fault point backup:mid-download', 120_000);
    expect(virsh('domjobinfo', VM)).toMatch(/Job type:\s+Unbounded/);
    expect(checkpoints()).toHaveLength(before.length + 1);
    return { child, before };
  };
  /** nothing of an interrupted backup is on the host or in the set */
  const nothingLeft = (checkpointsBefore: string[]) => {
    if (virsh('domstate', VM).trim() === 'running') expect(virsh('domjobinfo', VM)).toMatch(/Job type:\s+None/);
    expect(checkpoints()).toEqual(checkpointsBefore);
    expect(volumes().filter((v) => v.startsWith(`vmctl-bak-${VM}-`))).toEqual([]);
    expect(existsSync(nbdDir) ? readdirSync(nbdDir) : []).toEqual([]);
    const points = existsSync(join(set(), 'points')) ? readdirSync(join(set(), 'points')) : [];
    expect(points.filter((p) => p.startsWith('.partial'))).toEqual([]);
  };
  const backupWorks = async () => {
    const again = await vmctl(['backup', VM, '--to', set(), '--json'], { env, timeoutMs: 300_000 });
    expect(again.code, again.stderr).toBe(0);
    const b = JSON.parse(again.stdout) as { kind: string; disks: { dataBytes: number }[] };
    expect(b.kind).toBe('full');
    expect(Math.abs(b.disks[0]!.dataBytes - 64 * MiB)).toBeLessThan(4 * MiB);
    const v = await vmctl(['backup', 'verify', set()], { env });
    expect(v.code, v.stdout + v.stderr).toBe(0);
  };

  it('libvirtd restarts, QEMU runs on: one line naming the closed connection and the fix, everything undone, the guest runs on, the next backup works', { timeout: 300_000 }, async () => {
    const { child, before } = await startHeld();
    // only the daemon restarts (as `systemctl restart libvirtd` does): QEMU and its export run on
    execFileSync('bash', [join(repoRoot, 'scripts', 'test-rig.sh'), 'restart-libvirtd', 'host1'], { stdio: 'ignore' });
    const code = await child.done;
    const err = child.stderr();
    expect(code, err).toBe(5); // CONNECTION
    expect(lines(err).at(-1), err).toMatch(/^vmctl: connection to .* closed: the daemon closed the connection \(libvirtd stopped or restarted under the command: check it runs \(virsh version\), then run the command again\)$/);
    expect(err).toMatch(/undone\s+backup job, checkpoint and scratch volumes/);
    expect(err).not.toMatch(/could not undo|internal/i);
    expect(virsh('domstate', VM).trim()).toBe('running');
    nothingLeft(before);
    await backupWorks();
  });

  it('the host restarts and takes QEMU with it: one line naming the export that went away, the checkpoint of the stopped VM removed too, the next backup works', { timeout: 300_000 }, async () => {
    const { child, before } = await startHeld();
    // the whole host goes down and comes back, as after a reboot (its guests destroyed, its daemons restarted)
    execFileSync('bash', [join(repoRoot, 'scripts', 'test-rig.sh'), 'restart', 'host1'], { stdio: 'ignore' });
    const code = await child.done;
    const err = child.stderr();
    expect(code, err).toBe(5); // CONNECTION
    const last = lines(err).at(-1)!;
    expect(last, err).toMatch(/^vmctl: (the backup job's export of disk vda went away \(.*\): the VM stopped or its libvirtd restarted \(see vmctl list --all, then run the backup again\)|connection to .* closed: the daemon closed the connection \(libvirtd stopped or restarted.*\))$/);
    expect(err).not.toMatch(/could not undo|internal/i);
    // host1's disk file is not on this machine: vmctl says which bitmap stays in it, and how to remove it
    expect(err).toMatch(/dirty bitmap stays in \S+ on .*qemu-img bitmap --remove \S+tbr-\w+-data\.qcow2 vmctl-/);
    expect(virsh('domstate', VM).trim()).toBe('shut off');
    nothingLeft(before);
    virsh('start', VM);
    await backupWorks();
  });
});
