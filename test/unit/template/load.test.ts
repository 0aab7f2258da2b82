import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { templateDir as dir } from '../../_helpers/template-dir.js';
import { exitCodeFor } from '../../../src/cli/exit.js';
import { VmctlError } from '../../../src/core/errors.js';
import { defaultTemplateDirs, listTemplates, SHIPPED_TEMPLATE_DIR, userTemplateDir } from '../../../src/core/template/dirs.js';
import { checkTemplate, loadTemplate, type LoadTemplateOptions } from '../../../src/core/template/load.js';
import { mergeTemplates } from '../../../src/core/template/merge.js';
import type { TemplateOverrides } from '../../../src/core/template/overrides.js';
import { formatProblem } from '../../../src/core/template/problems.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host';
const GiB = 1024 ** 3;

async function problems(name: string, opts: LoadTemplateOptions): Promise<string[]> {
  const r = await checkTemplate(name, opts);
  return r.ok ? [] : r.problems.map(formatProblem);
}

describe('shipped templates', () => {
  it('live in vm-templates/ of the package, whatever the cwd', () => {
    expect(SHIPPED_TEMPLATE_DIR).toBe(path.join(REPO, 'vm-templates'));
  });

  it('all load and have the documented sizes', async () => {
    const dirs = [SHIPPED_TEMPLATE_DIR];
    const get = async (n: string) => (await loadTemplate(n, { dirs })).spec;
    const small = await get('small');
    expect([small.cpus, small.memoryMiB, small.disks[0]!.sizeBytes]).toEqual([1, 512, 4 * GiB]);
    expect(small.serial).toBe(true);
    expect(small.cloudInit).toEqual({ user: 'vmctl', sshKeys: [], packages: [], runcmd: [] });
    expect(small.nics).toEqual([{ type: 'user', model: 'virtio', forwards: [{ host: '127.0.0.1', hostPort: 0, guestPort: 22, proto: 'tcp' }] }]);
    const medium = await get('medium');
    expect([medium.cpus, medium.memoryMiB, medium.disks[0]!.sizeBytes]).toEqual([2, 2048, 20 * GiB]);
    const desk = await get('desktop-lab');
    expect([desk.cpus, desk.memoryMiB, desk.disks[0]!.sizeBytes, desk.graphics]).toEqual([2, 4096, 20 * GiB, 'spice']);
    const uefi = await get('uefi');
    expect([uefi.cpus, uefi.memoryMiB, uefi.firmware, uefi.machine]).toEqual([1, 512, 'uefi', 'q35']);
    const def = await loadTemplate(undefined, { dirs });
    expect(def.name).toBe('default');
    expect(def.spec.serial).toBe(true);
    expect(def.spec.nics).toHaveLength(1);
    expect(def.spec.cloudInit).toBeDefined();
    expect(def.files).toEqual(['vm-templates/default.yaml', 'vm-templates/small.yaml']);
  });

  it('are listed with their descriptions', async () => {
    const list = await listTemplates([SHIPPED_TEMPLATE_DIR]);
    expect(list.map((t) => t.name)).toEqual(['default', 'desktop-lab', 'medium', 'small', 'uefi']);
    for (const t of list) expect(t.description).toMatch(/\S/);
  });
});

describe('template directories', () => {
  it('user dir first, then the shipped one; XDG_CONFIG_HOME is honoured', () => {
    expect(userTemplateDir({ XDG_CONFIG_HOME: '/x/cfg' }, '/home/u')).toBe('/x/cfg/vmctl/templates');
    expect(userTemplateDir({}, '/home/u')).toBe('/home/u/.config/vmctl/templates');
    expect(userTemplateDir({ XDG_CONFIG_HOME: 'relative' }, '/home/u')).toBe('/home/u/.config/vmctl/templates');
    expect(defaultTemplateDirs({ XDG_CONFIG_HOME: '/x/cfg' })).toEqual(['/x/cfg/vmctl/templates', SHIPPED_TEMPLATE_DIR]);
  });

  it('a user template overrides a shipped one of the same name, and may extend it', async () => {
    const user = dir({ medium: 'extends: medium\ncpus: 4\n', mine: 'extends: medium\n' });
    const dirs = [user, SHIPPED_TEMPLATE_DIR];
    const medium = await loadTemplate('medium', { dirs });
    expect(medium.spec.cpus).toBe(4);
    expect(medium.spec.memoryMiB).toBe(2048); // from the shipped medium
    expect(medium.files).toEqual([path.join(user, 'medium.yaml'), 'vm-templates/medium.yaml', 'vm-templates/small.yaml']);
    // another template extending "medium" gets the user's
    expect((await loadTemplate('mine', { dirs })).spec.cpus).toBe(4);
    const list = await listTemplates(dirs);
    const m = list.find((t) => t.name === 'medium')!;
    expect(m.file).toBe(path.join(user, 'medium.yaml'));
    expect(m.shadows).toEqual([path.join(SHIPPED_TEMPLATE_DIR, 'medium.yaml')]);
  });

  it('missing directories are fine; files with bad names are ignored', async () => {
    const d = dir({ ok: 'cpus: 1\n', 'Bad Name': 'cpus: 1\n' });
    writeFileSync(path.join(d, 'notes.txt'), 'x');
    mkdirSync(path.join(d, 'sub.yaml'));
    const list = await listTemplates([path.join(d, 'nope'), d]);
    expect(list.map((t) => t.name)).toEqual(['ok']);
  });
});

describe('extends', () => {
  it('merges mappings, replaces lists, deletes with null, replaces on a type change', async () => {
    const d = dir({
      base: [
        'cpus: 1',
        'memory: 512',
        'disks: [{name: root, size: 4}, {name: data, size: 1}]',
        'cloudInit: {user: alice, packages: [vim]}',
        'graphics: vnc',
        'boot: {type: disk}',
      ].join('\n'),
      mid: ['extends: base', 'cpus: 2', 'cloudInit: {packages: [curl]}', 'disks: [{name: root, size: 8}]'].join('\n'),
      leaf: ['extends: mid', 'graphics: null', 'boot: {type: kernel, kernel: /boot/vmlinuz}'].join('\n'),
      nocloud: ['extends: mid', 'cloudInit: null'].join('\n'),
    });
    const leaf = await loadTemplate('leaf', { dirs: [d] });
    expect(leaf.spec.cpus).toBe(2);
    expect(leaf.spec.memoryMiB).toBe(512);
    expect(leaf.spec.cloudInit).toEqual({ user: 'alice', packages: ['curl'], sshKeys: [], runcmd: [] });
    expect(leaf.spec.disks.map((x) => [x.name, x.sizeBytes])).toEqual([['root', 8 * GiB]]);
    expect(leaf.spec.graphics).toBe('none'); // deleted, so the default
    expect(leaf.spec.boot).toEqual({ type: 'kernel', kernel: '/boot/vmlinuz', cmdline: '' });
    expect(leaf.files).toEqual(['leaf', 'mid', 'base'].map((n) => path.join(d, `${n}.yaml`)));
    expect((await loadTemplate('nocloud', { dirs: [d] })).spec.cloudInit).toBeUndefined();
  });

  it('mergeTemplates does not modify its inputs', () => {
    const parent = { a: { b: 1, c: [1] } };
    const child = { a: { b: 2 } };
    expect(mergeTemplates(parent, child)).toEqual({ a: { b: 2, c: [1] } });
    expect(parent).toEqual({ a: { b: 1, c: [1] } });
  });

  it('cycles are errors naming the chain', async () => {
    const d = dir({ a: 'extends: b\n', b: 'extends: c\n', c: 'extends: a\n' });
    expect(await problems('a', { dirs: [d] })).toEqual([`${path.join(d, 'c.yaml')}: /extends: template "a": extends cycle a → b → c → a`]);
    const two = dir({ a: 'cpus: 1\nextends: b\n', b: 'extends: a\n' });
    expect(await problems('b', { dirs: [two] })).toEqual([`${path.join(two, 'a.yaml')}: /extends: template "b": extends cycle b → a → b`]);
  });

  it('a template extending its own name with nothing below is a cycle, not an unknown template', async () => {
    const d = dir({ a: 'extends: a\n' });
    expect(await problems('a', { dirs: [d] })).toEqual([
      `${path.join(d, 'a.yaml')}: /extends: template "a": extends cycle a → a (no lower-priority template directory has a "a" to extend)`,
    ]);
    // the same name one directory down is what a self-extends means: no cycle
    const shipped = dir({ a: 'cpus: 2\n' });
    const r = await checkTemplate('a', { dirs: [d, shipped] });
    expect(r.ok && r.value.spec.cpus).toBe(2);
  });

  it('loadTemplate throws INVALID_TEMPLATE (exit status 2) for a cycle, whose problem says extends-cycle', async () => {
    const d = dir({ a: 'extends: b\n', b: 'extends: a\n', self: 'extends: self\n' });
    for (const name of ['a', 'self']) {
      const err = await loadTemplate(name, { dirs: [d] }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(VmctlError);
      expect((err as VmctlError).code).toBe('INVALID_TEMPLATE');
      expect(exitCodeFor((err as VmctlError).code)).toBe(2);
      expect((err as VmctlError).message).toContain(`template "${name}": extends cycle ${name === 'a' ? 'a → b → a' : 'self → self'}`);
      expect((err as VmctlError).details?.problems).toMatchObject([{ rule: 'extends-cycle', path: '/extends' }]);
    }
  });

  it('unknown and malformed parents', async () => {
    const d = dir({ a: 'cpus: 1\nextends: nope\n', b: 'extends: ../a\n', c: 'extends: [a]\n' });
    expect(await problems('a', { dirs: [d] })).toEqual([`${path.join(d, 'a.yaml')}: /extends: unknown template "nope" (available: a, b, c)`]);
    expect(await problems('b', { dirs: [d] })).toEqual([
      `${path.join(d, 'b.yaml')}: /extends: invalid template name "../a": use lowercase letters, digits, '.', '_' and '-' (max 63), starting with a letter or digit`,
    ]);
    expect(await problems('c', { dirs: [d] })).toEqual([`${path.join(d, 'c.yaml')}: /extends: must be a template name`]);
  });

  it('problems name the file the bad value came from', async () => {
    const d = dir({
      parent: 'cpus: 1\nmemory: 32\ndisks: [{name: root, size: 1, bus: nvme}]\n',
      child: 'extends: parent\ncpus: 0\n',
      child2: 'extends: parent\nmemory: 128\ndisks: [{name: root, size: 1}, {name: root, size: 2}]\n',
    });
    const p = path.join(d, 'parent.yaml');
    const c = path.join(d, 'child.yaml');
    const c2 = path.join(d, 'child2.yaml');
    const r = await checkTemplate('child', { dirs: [d] });
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(new Set(r.problems.map(formatProblem))).toEqual(
        new Set([`${c}: /cpus: must be >= 1`, `${p}: /memory: must be >= 64 (MiB)`, `${p}: /disks/0/bus: must be one of: virtio, sata, scsi, ide`]),
      );
      const mem = r.problems.find((x) => x.path === '/memory')!;
      expect([mem.line, mem.col]).toEqual([2, 9]);
    }
    expect(await problems('child2', { dirs: [d] })).toEqual([`${c2}: /disks/1/name: duplicate disk name "root" (also /disks/0/name)`]);
  });

  it('a YAML error in a parent names the parent file, line and column', async () => {
    const d = dir({ parent: 'cpus: 1\nmemory: [512\n', child: 'extends: parent\n' });
    expect(await problems('child', { dirs: [d] })).toEqual([
      `${path.join(d, 'parent.yaml')}:3:1: YAML: Flow sequence in block collection must be sufficiently indented and end with a ]`,
    ]);
  });
});

describe('loadTemplate errors', () => {
  it('throws INVALID_TEMPLATE with every problem, one per line, and typed details', async () => {
    const d = dir({ web: 'cpus: 0\nmemory: 1\n' });
    const file = path.join(d, 'web.yaml');
    const err = await loadTemplate('web', { dirs: [d] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmctlError);
    const e = err as VmctlError;
    expect(e.code).toBe('INVALID_TEMPLATE');
    expect(e.message).toBe(`${file}: /cpus: must be >= 1\n${file}: /memory: must be >= 64 (MiB)`);
    expect((e.details?.problems as unknown[]).length).toBe(2);
  });

  it('unknown template: NOT_FOUND naming the flag and what exists', async () => {
    const d = dir({ a: 'cpus: 1\n', b: 'cpus: 1\n' });
    const err = (await loadTemplate('nope', { dirs: [d], nameFrom: '--template' }).catch((e: unknown) => e)) as VmctlError;
    expect(err.code).toBe('NOT_FOUND');
    expect(err.message).toBe(`--template: unknown template "nope" (available: a, b; searched ${d})`);
  });

  it('bad template name: INVALID_INPUT', async () => {
    const err = (await loadTemplate('../etc/passwd', { dirs: [SHIPPED_TEMPLATE_DIR], nameFrom: '--template' }).catch((e: unknown) => e)) as VmctlError;
    expect(err.code).toBe('INVALID_INPUT');
    expect(err.message).toBe(
      `--template: invalid template name "../etc/passwd": use lowercase letters, digits, '.', '_' and '-' (max 63), starting with a letter or digit`,
    );
  });
});

describe('CLI overrides', () => {
  const dirs = [SHIPPED_TEMPLATE_DIR];
  const withOverrides = (overrides: TemplateOverrides, name = 'small') => checkTemplate(name, { dirs, overrides });
  const flagProblems = async (overrides: TemplateOverrides, name = 'small') => {
    const r = await withOverrides(overrides, name);
    return r.ok ? [] : r.problems.map(formatProblem);
  };

  it('apply on top of the resolved template', async () => {
    const r = await withOverrides({ cpus: '4', memory: '2GiB', diskSize: 30, image: 'debian-12', sshKeys: [KEY, ` ${KEY}\n`] });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const s = r.value.spec;
    expect([s.cpus, s.memoryMiB, s.disks[0]!.sizeBytes, s.image]).toEqual([4, 2048, 30 * GiB, 'debian-12']);
    expect(s.cloudInit?.sshKeys).toEqual([KEY, KEY]);
  });

  it('--memory 1024 (a number) means MiB, --disk-size "512M" works', async () => {
    const r = await withOverrides({ memory: 1024, diskSize: '512M' });
    expect(r.ok && [r.value.spec.memoryMiB, r.value.spec.disks[0]!.sizeBytes]).toEqual([1024, 512 * 1024 * 1024]);
  });

  it.each<[TemplateOverrides, string]>([
    [{ memory: 32 }, '--memory: must be >= 64 (MiB)'],
    [{ memory: '32M' }, '--memory: must be >= 64 (MiB)'],
    [{ memory: 'much' }, '--memory: must be a size in MiB or like 512MiB or 2GiB'],
    [{ cpus: 0 }, '--cpus: must be >= 1'],
    [{ cpus: 'four' }, '--cpus: must be an integer'],
    [{ cpus: 100 }, '--cpus: must be <= 64'],
    [{ diskSize: 'huge' }, '--disk-size: must be a size in GiB or like 10GiB or 512MiB'],
    [{ diskSize: 0 }, '--disk-size: must be >= 1 (GiB)'],
    [{ image: '../x' }, "--image: must be an image name (letters, digits, '.', '_', '+', '-')"],
    [{ image: "a'b<c>" }, "--image: must be an image name (letters, digits, '.', '_', '+', '-')"],
    [{ network: 'my net' }, "--network: must be a libvirt network name (letters, digits, '.', '_', '-')"],
    [{ network: 'bridge=' }, "--network: must be a bridge interface name (letters, digits, '.', '_', '-', max 15)"],
    [{ network: 'user=x' }, '--network: user takes no argument: use --network user'],
    [{ sshKeys: ['not-a-key'] }, '--ssh-key: must be one OpenSSH public key line ("ssh-ed25519 AAAA… comment")'],
  ])('%j → %s', async (overrides, expected) => {
    expect(await flagProblems(overrides)).toEqual([expected]);
  });

  it('several bad flags: all reported', async () => {
    expect(await flagProblems({ cpus: 0, memory: 1 })).toEqual(['--cpus: must be >= 1', '--memory: must be >= 64 (MiB)']);
  });

  it('--network forms', async () => {
    const nic0 = async (network: string) => {
      const r = await withOverrides({ network });
      if (!r.ok) throw new Error(r.problems.map(formatProblem).join('\n'));
      return r.value.spec.nics[0];
    };
    expect(await nic0('default')).toEqual({ type: 'network', network: 'default', model: 'virtio' });
    expect(await nic0('network=lab')).toEqual({ type: 'network', network: 'lab', model: 'virtio' });
    expect(await nic0('bridge=br0')).toEqual({ type: 'bridge', bridge: 'br0', model: 'virtio' });
    expect(await nic0('bridge:br1')).toEqual({ type: 'bridge', bridge: 'br1', model: 'virtio' });
    expect(await nic0('user')).toEqual({
      type: 'user',
      model: 'virtio',
      forwards: [{ host: '127.0.0.1', hostPort: 0, guestPort: 22, proto: 'tcp' }],
    });
  });

  it('--ssh-key / --disk-size on a template that cannot take them', async () => {
    const d = dir({ bare: 'boot: {type: kernel, kernel: /k}\ndisks: []\n' });
    expect(await problems('bare', { dirs: [d], overrides: { sshKeys: [KEY] } })).toEqual([
      '--ssh-key: template "bare" has no cloudInit section to install keys with',
    ]);
    expect(await problems('bare', { dirs: [d], overrides: { diskSize: 10 } })).toEqual(['--disk-size: template "bare" has no disk']);
    expect(await problems('bare', { dirs: [d], overrides: { image: 'debian-12' } })).toEqual(['--image: the template has no disk to put the image on']);
  });

  it('template problems are reported before overrides are looked at', async () => {
    const d = dir({ web: 'cpus: 0\n' });
    expect(await problems('web', { dirs: [d], overrides: { memory: 1 } })).toEqual([`${path.join(d, 'web.yaml')}: /cpus: must be >= 1`]);
  });
});
