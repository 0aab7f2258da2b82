/**
 * Nothing vmctl makes for a VM is readable by another local user (issue #7):
 * not the guest's disk overlay, not its seed ISO (which holds the guest's SSH
 * host private key), not the base image's files in the pool directory, not the
 * client-side state dir (login key, host key, known_hosts), not the cached
 * built image. Checked as the unprivileged user `nobody` (setpriv), against
 * root reading the very same paths; a world-readable canary in the same
 * (world-traversable) test directory proves `nobody` can read what it is
 * allowed to, so a denial means the file's own protection.
 *
 * Then QEMU must still use those 0600 root-owned files: two VMs sharing the
 * base image as their backing file are started with virsh (libvirt's DAC
 * driver hands the files to the QEMU user) and destroyed right away.
 *
 * The built image comes from buildImageFiles() with a stand-in build script
 * (the real one needs debootstrap and minutes) that leaves its outputs 0644
 * like build-image.sh used to; the kernel and initrd are the shared Debian
 * image's, copied. Everything is named timg-… and removed afterwards.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildImageFiles, builtImageFiles } from '../../src/core/image/build.js';
import { domainFileReferences } from '../../src/core/image/inspect.js';
import { builtImagePath, vmStateDir } from '../../src/core/paths.js';
import { diskVolumeName, imageVolumeNames, seedVolumeName } from '../../src/core/storage/volume.js';
import { repoRoot } from '../_helpers/rig.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';

const URI = 'qemu:///system';
const tag = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
const IMAGE = `timg-base-${tag}`;
const VMS = [`timg-${tag}-a`, `timg-${tag}-b`];

function virsh(...args: string[]): string {
  return execFileSync('virsh', ['-c', URI, ...args], { encoding: 'utf8' });
}

/** `cat FILE` as nobody:nogroup without supplementary groups: exit status and stderr. */
function readAsNobody(file: string): { status: number | null; stderr: string } {
  const r = spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'cat', file], { encoding: 'buffer' });
  return { status: r.status, stderr: r.stderr.toString('utf8') };
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)]));
}

describe('volume and client file permissions', () => {
  let root: string;
  let cache: string;
  let data: string;
  let poolDir: string;
  const saved = { VMCTL_CACHE_DIR: process.env.VMCTL_CACHE_DIR, VMCTL_DATA_DIR: process.env.VMCTL_DATA_DIR };
  const env = () => ({ VMCTL_CACHE_DIR: cache, VMCTL_DATA_DIR: data, LIBVIRT_DEFAULT_URI: URI });

  beforeAll(async () => {
    ensureBuilt();
    // world-traversable, so only the modes vmctl gives its own files and directories protect them
    root = mkdtempSync(join(tmpdir(), 'timg-perms-'));
    chmodSync(root, 0o755);
    cache = join(root, 'cache');
    data = join(root, 'data');
    // a build cache that already exists, world-readable: vmctl must tighten it
    mkdirSync(join(cache, 'images'), { recursive: true, mode: 0o755 });
    chmodSync(cache, 0o755);
    chmodSync(join(cache, 'images'), 0o755);
    process.env.VMCTL_CACHE_DIR = cache;
    process.env.VMCTL_DATA_DIR = data;

    const shared = join(repoRoot, '.cache', 'images', 'debian-12.qcow2');
    const script = join(root, 'fake-build-image.sh');
    writeFileSync(
      script,
      [
        '#!/usr/bin/env bash',
        'set -euo pipefail',
        'umask 022',
        'out=$3',
        'qemu-img create -q -f qcow2 "$out" 64M',
        `install -m 0644 ${JSON.stringify(`${shared}.vmlinuz`)} "$out.vmlinuz"`,
        `install -m 0644 ${JSON.stringify(`${shared}.initrd`)} "$out.initrd"`,
        'b=$(basename "$out")',
        'printf \'{"manifestVersion":1,"format":"qcow2","boot":{"method":"direct-kernel","kernel":"%s.vmlinuz","initrd":"%s.initrd","cmdline":"console=ttyS0 panic=-1"}}\\n\' "$b" "$b" > "$out.json"',
        'echo "PROGRESS 100 done"',
        'echo "RESULT $out.json"',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    await buildImageFiles('debian-12', { script });

    const imported = await vmctl(['image', 'import', builtImagePath('debian-12'), '--name', IMAGE, '--json'], { env: env() });
    expect(imported.code, imported.stderr).toBe(0);
    poolDir = join((JSON.parse(imported.stdout) as { path: string }).path, '..');
    for (const vm of VMS) {
      const r = await vmctl(['create', vm, '--image', IMAGE, '--no-start', '--accel', 'tcg', '--json'], { env: env() });
      expect(r.code, r.stderr).toBe(0);
    }
  }, 180_000);

  afterAll(async () => {
    for (const vm of VMS) {
      spawnSync('virsh', ['-c', URI, 'destroy', vm]);
      await vmctl(['delete', vm], { env: env() });
    }
    await vmctl(['image', 'rm', IMAGE], { env: env() });
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    if (root) rmSync(root, { recursive: true, force: true });
  });

  /** Every file the test must find unreadable for nobody, by what it is. */
  function protectedFiles(): Record<string, string> {
    const img = imageVolumeNames(IMAGE, 'qcow2');
    const files: Record<string, string> = {
      'base image disk': join(poolDir, img.disk),
      'base image kernel': join(poolDir, img.kernel),
      'base image initrd': join(poolDir, img.initrd),
      'base image manifest': join(poolDir, img.manifest),
    };
    for (const vm of VMS) {
      files[`${vm} overlay`] = join(poolDir, diskVolumeName(vm, 'root', 'qcow2'));
      files[`${vm} seed ISO`] = join(poolDir, seedVolumeName(vm));
      for (const f of filesUnder(vmStateDir(URI, vm))) files[`${vm} state ${f.slice(f.lastIndexOf('/') + 1)}`] = f;
    }
    for (const f of builtImageFiles(builtImagePath('debian-12'))) files[`cached built image ${f.slice(f.lastIndexOf('/') + 1)}`] = f;
    return files;
  }

  function expectOnlyRootReads(files: Record<string, string>): void {
    for (const [what, file] of Object.entries(files)) {
      expect(readFileSync(file).length, `root reads the ${what}`).toBeGreaterThan(0);
      expect(statSync(file).mode & 0o077, `${what} ${file} has no group/other bits`).toBe(0);
      const r = readAsNobody(file);
      expect(r.status, `nobody must not read the ${what} (${file})`).not.toBe(0);
      expect(r.stderr, what).toMatch(/Permission denied/);
    }
  }

  it('the check itself works: nobody reads a world-readable file next to them', () => {
    const canary = join(root, 'canary');
    writeFileSync(canary, 'readable\n', { mode: 0o644 });
    chmodSync(canary, 0o644);
    const r = spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'cat', canary], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('readable\n');
    expect(execFileSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'id', '-u'], { encoding: 'utf8' }).trim()).toBe(
      execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim(),
    );
  });

  it('no volume, state file or cached image vmctl made is readable by another user; root reads them all', () => {
    const files = protectedFiles();
    // the state dirs hold the login key, the guest's host key pair and known_hosts
    for (const vm of VMS) expect(Object.keys(files).filter((k) => k.startsWith(`${vm} state `)).length).toBe(5);
    expectOnlyRootReads(files);
    // every file a domain will open is among them
    for (const vm of VMS) {
      for (const ref of domainFileReferences(virsh('dumpxml', vm))) expect(Object.values(files), `${vm} references ${ref}`).toContain(ref);
    }
    // the directories vmctl made on the client are owner-only
    expect(statSync(join(cache, 'images')).mode & 0o777).toBe(0o700);
    for (const vm of VMS) expect(statSync(vmStateDir(URI, vm)).mode & 0o777).toBe(0o700);
    // and libvirt reports the mode vmctl asked for
    for (const vm of VMS) expect(virsh('vol-dumpxml', '--pool', 'vmctl', seedVolumeName(vm))).toMatch(/<mode>0600<\/mode>/);
  });

  it('QEMU still opens them: two VMs sharing the 0600 base image start, and the files stay private', () => {
    try {
      for (const vm of VMS) virsh('start', vm);
      for (const vm of VMS) expect(virsh('domstate', vm).trim()).toBe('running');
    } finally {
      for (const vm of VMS) spawnSync('virsh', ['-c', URI, 'destroy', vm]);
    }
    for (const vm of VMS) expect(virsh('domstate', vm).trim()).toBe('shut off');
    // libvirt handed them to the QEMU user and (mostly) back; the mode stayed 0600 either way
    expectOnlyRootReads(protectedFiles());
  });
});
