/**
 * The shipped `uefi` template boots for real: OVMF firmware (Secure Boot
 * off) on q35, the Debian image's kernel loaded by the firmware; the guest
 * sees EFI, and delete removes the VM's NVRAM along with its volumes.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../_helpers/rig.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';

const VM = 'uefi1';
const virsh = (...args: string[]) => execFileSync('virsh', ['-c', 'qemu:///system', ...args], { encoding: 'utf8' });
const domains = () => virsh('list', '--all', '--name').split('\n').filter(Boolean);

describe('the uefi template (TCG)', () => {
  let env: NodeJS.ProcessEnv;
  let dataDir: string;
  let nvram = '';

  beforeAll(() => {
    ensureBuilt();
    dataDir = mkdtempSync(join(tmpdir(), 'vmctl-data-'));
    env = { VMCTL_CACHE_DIR: join(repoRoot, '.cache'), VMCTL_DATA_DIR: dataDir, LIBVIRT_DEFAULT_URI: 'qemu:///system' };
    if (domains().includes(VM)) throw new Error(`a domain named ${VM} already exists; remove it first`);
  });

  afterAll(async () => {
    if (domains().includes(VM)) await vmctl(['delete', VM], { env });
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('boots to SSH-ready under OVMF, and the guest runs on EFI', { timeout: 20 * 60_000 }, async () => {
    const r = await vmctl(['create', VM, '--template', 'uefi', '--accel', 'tcg', '--json'], { env, timeoutMs: 20 * 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ name: VM, state: 'running', domainType: 'qemu' });
    const xml = virsh('dumpxml', VM);
    expect(xml).toMatch(/<loader readonly='yes' type='pflash'>[^<]*OVMF_CODE[^<]*\.fd<\/loader>/);
    expect(xml).toMatch(/machine='pc-q35-/);
    nvram = /<nvram[^>]*>([^<]+)<\/nvram>/.exec(xml)?.[1] ?? '';
    expect(existsSync(nvram)).toBe(true);
    const efi = await vmctl(['ssh', VM, '--', 'test', '-d', '/sys/firmware/efi', '&&', 'cat', '/sys/firmware/efi/fw_platform_size'], { env });
    expect(efi.code, efi.stderr).toBe(0);
    expect(efi.stdout.trim()).toBe('64');
  });

  it('delete removes the NVRAM file too', { timeout: 120_000 }, async () => {
    const r = await vmctl(['delete', VM], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(domains()).not.toContain(VM);
    expect(nvram).not.toBe('');
    expect(existsSync(nvram)).toBe(false);
  });
});
