/**
 * `vmctl template list|show` as a user runs them (the built binary, no
 * daemon): XDG_CONFIG_HOME points at a throwaway directory holding the user's
 * templates, one overriding a shipped one, two forming an extends cycle.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { vmctl } from '../../_helpers/vmctl.js';

let config: string;
let userTemplates: string;
const env = () => ({ XDG_CONFIG_HOME: config, LIBVIRT_DEFAULT_URI: '' });

beforeAll(() => {
  config = mkdtempSync(path.join(tmpdir(), 'vmctl-xdg-'));
  userTemplates = path.join(config, 'vmctl', 'templates');
  mkdirSync(userTemplates, { recursive: true });
  writeFileSync(path.join(userTemplates, 'default.yaml'), 'extends: default\ncpus: 2\n');
  writeFileSync(path.join(userTemplates, 'big.yaml'), 'extends: medium\ndescription: Big one\nmemory: 8GiB\n');
  writeFileSync(path.join(userTemplates, 'loopa.yaml'), 'extends: loopb\n');
  writeFileSync(path.join(userTemplates, 'loopb.yaml'), 'extends: loopa\n');
  writeFileSync(path.join(userTemplates, 'me.yaml'), 'extends: me\n');
});
afterAll(() => rmSync(config, { recursive: true, force: true }));

describe('vmctl template list', () => {
  it('a table: name, where it comes from, what it extends, description or summary', async () => {
    const r = await vmctl(['template', 'list'], { env: env() });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const rows = r.stdout.trimEnd().split('\n').map((l) => l.split(/\s{2,}/));
    expect(rows[0]).toEqual(['NAME', 'FROM', 'EXTENDS', 'DESCRIPTION']);
    const byName = new Map(rows.slice(1).map((cells) => [cells[0], cells.slice(1)]));
    expect([...byName.keys()]).toEqual(['big', 'default', 'desktop-lab', 'loopa', 'loopb', 'me', 'medium', 'small', 'uefi']);
    expect(byName.get('default')).toEqual(['user (overrides shipped)', 'default', '2 vCPUs, 512 MiB, image debian-12 (default)']);
    expect(byName.get('big')).toEqual(['user', 'medium', 'Big one']);
    expect(byName.get('small')).toEqual(['shipped', '-', 'Small server - 1 vCPU, 512 MiB, 4 GiB disk, serial console']);
    expect(byName.get('loopa')![2]).toMatch(/^INVALID: .*loopb\.yaml: \/extends: template "loopa": extends cycle loopa → loopb → loopa$/);
  });

  it('--json: one object per template', async () => {
    const r = await vmctl(['template', 'list', '--json'], { env: env() });
    expect(r.code).toBe(0);
    const list = JSON.parse(r.stdout) as Record<string, unknown>[];
    expect(list.find((t) => t.name === 'big')).toEqual({
      name: 'big',
      origin: 'user',
      file: path.join(userTemplates, 'big.yaml'),
      overrides: [],
      extends: 'medium',
      description: 'Big one',
      cpus: 2,
      memoryMiB: 8192,
      summary: '2 vCPUs, 8 GiB, image debian-12 (default)',
    });
  });
});

describe('vmctl template show', () => {
  it('prints the template resolved after extends and defaults as YAML', async () => {
    const r = await vmctl(['template', 'show', 'default'], { env: env() });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^# template "default" \(user\), resolved after extends and defaults\n# extends: default → default → small\n/);
    const doc = parse(r.stdout) as Record<string, unknown>;
    expect(doc).toMatchObject({ cpus: 2, memory: '512MiB', machine: 'q35', serial: true, disks: [{ name: 'root', size: '4GiB', bus: 'virtio' }] });
    expect(doc).not.toHaveProperty('extends');
  });

  it('--json: the template, the normalised spec, the chain and files', async () => {
    const r = await vmctl(['template', 'show', 'big', '--json'], { env: env() });
    expect(r.code).toBe(0);
    const shown = JSON.parse(r.stdout) as { chain: string[]; files: string[]; template: { memory: string }; spec: { memoryMiB: number } };
    expect(shown.chain).toEqual(['big', 'medium', 'small']);
    expect(shown.files).toEqual([path.join(userTemplates, 'big.yaml'), 'vm-templates/medium.yaml', 'vm-templates/small.yaml']);
    expect(shown.template.memory).toBe('8GiB');
    expect(shown.spec.memoryMiB).toBe(8192);
  });

  it('an unknown name: exit 3, the available ones listed', async () => {
    const r = await vmctl(['template', 'show', 'nope'], { env: env() });
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('unknown template "nope" (available: big, default, desktop-lab, loopa, loopb, me, medium, small, uefi;');
  });

  it('an extends cycle or a self-extends: exit 2 naming the cycle', async () => {
    const cycle = await vmctl(['template', 'show', 'loopa'], { env: env() });
    expect(cycle.code).toBe(2);
    expect(cycle.stderr).toContain(`${path.join(userTemplates, 'loopb.yaml')}: /extends: template "loopa": extends cycle loopa → loopb → loopa`);
    expect(cycle.stderr).not.toContain('unknown template');
    const self = await vmctl(['template', 'show', 'me', '--json'], { env: env() });
    expect(self.code).toBe(2);
    const err = (JSON.parse(self.stdout) as { error: { code: string; message: string } }).error;
    expect(err.code).toBe('INVALID_TEMPLATE');
    expect(err.message).toContain('template "me": extends cycle me → me');
  });
});
