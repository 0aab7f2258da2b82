/**
 * A VM whose base image vanished behind vmctl's back (removed with virsh, a
 * lost disk): starting it must say which image is missing and how to bring it
 * back, not pass on QEMU's "Cannot access backing file …".
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../_helpers/rig.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';

const virsh = (...args: string[]) => execFileSync('virsh', ['-c', 'qemu:///system', ...args], { encoding: 'utf8' });
const VM = 'tbk1';
const IMAGE = 'tbk-base';

describe('a missing base image under an overlay', () => {
  let work: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(() => {
    ensureBuilt();
    work = mkdtempSync(join(tmpdir(), 'vmctl-missing-base-'));
    env = { VMCTL_CACHE_DIR: join(repoRoot, '.cache'), VMCTL_DATA_DIR: join(work, 'data'), LIBVIRT_DEFAULT_URI: 'qemu:///system' };
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(work, 'base.qcow2'), '64M']);
  });

  afterAll(async () => {
    await vmctl(['delete', VM], { env });
    await vmctl(['image', 'rm', IMAGE], { env });
    rmSync(work, { recursive: true, force: true });
  });

  it('start names the image and the command that brings it back', async () => {
    expect((await vmctl(['image', 'import', join(work, 'base.qcow2'), '--name', IMAGE], { env })).code).toBe(0);
    const c = await vmctl(['create', VM, '--image', IMAGE, '--no-start', '--accel', 'tcg'], { env });
    expect(c.code, c.stderr).toBe(0);
    virsh('vol-delete', `img_${IMAGE}.qcow2`, '--pool', 'vmctl');
    const r = await vmctl(['start', VM], { env });
    expect(r.code).toBe(3);
    const line = r.stderr.trim().split('\n').at(-1)!;
    expect(line).toMatch(new RegExp(`^vmctl: VM ${VM} cannot start: its base image '${IMAGE}' is missing \\(/.*img_${IMAGE}\\.qcow2\\)`));
    expect(line).toContain(`vmctl image import FILE --name ${IMAGE}`);
    expect(line).not.toMatch(/Cannot access backing file/);
    // the VM is still there, untouched, and delete removes exactly it
    const del = await vmctl(['delete', VM], { env });
    expect(del.code, del.stderr).toBe(0);
    expect(del.stdout).toContain(`vmctl/${VM}-root.qcow2`);
  });
});
