/** `vmctl template list/show` data: origin, overrides, extends, summaries, the resolved document and its YAML. */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { templateDir as userDir } from '../../_helpers/template-dir.js';
import { parse } from 'yaml';
import { VmctlError } from '../../../src/core/errors.js';
import { listTemplateEntries, originOf, showTemplate, templateYaml } from '../../../src/core/template/catalog.js';
import { SHIPPED_TEMPLATE_DIR } from '../../../src/core/template/dirs.js';
import { validateTemplate } from '../../../src/core/template/validate.js';

describe('listTemplateEntries', () => {
  it('lists shipped and user templates with origin, overrides, extends, description and resolved summary', async () => {
    const user = userDir({
      default: 'extends: default\ncpus: 3\nimage: my-image\n',
      mine: 'extends: medium\ndescription: "mine\\nsecond line"\nmemory: 1GiB\n',
      broken: 'cpus: 0\n',
    });
    const entries = await listTemplateEntries([user, SHIPPED_TEMPLATE_DIR]);
    expect(entries.map((e) => e.name)).toEqual(['broken', 'default', 'desktop-lab', 'medium', 'mine', 'small', 'uefi']);
    const byName = new Map(entries.map((e) => [e.name, e]));
    expect(byName.get('default')).toEqual({
      name: 'default',
      origin: 'user',
      file: path.join(user, 'default.yaml'),
      overrides: [{ origin: 'shipped', file: 'vm-templates/default.yaml' }],
      extends: 'default',
      cpus: 3,
      memoryMiB: 512,
      image: 'my-image',
    });
    expect(byName.get('mine')).toMatchObject({ origin: 'user', extends: 'medium', description: 'mine\nsecond line', cpus: 2, memoryMiB: 1024, overrides: [] });
    expect(byName.get('small')).toMatchObject({ origin: 'shipped', file: 'vm-templates/small.yaml', cpus: 1, memoryMiB: 512 });
    expect(byName.get('small')!.extends).toBeUndefined();
    expect(byName.get('broken')).toMatchObject({ origin: 'user', problem: `${path.join(user, 'broken.yaml')}: /cpus: must be >= 1` });
    expect(byName.get('broken')!.cpus).toBeUndefined();
  });

  it('origin: only vm-templates/ of this installation is shipped', () => {
    expect(originOf(SHIPPED_TEMPLATE_DIR + '/')).toBe('shipped');
    expect(originOf('/etc/vmctl/templates')).toBe('user');
  });
});

describe('showTemplate', () => {
  it('resolves extends and defaults into template syntax; the YAML parses back to the same document, which validates', async () => {
    const shown = await showTemplate('desktop-lab', [userDir({}), SHIPPED_TEMPLATE_DIR]);
    expect(shown).toMatchObject({ name: 'desktop-lab', origin: 'shipped', chain: ['desktop-lab', 'medium', 'small'] });
    expect(shown.files).toEqual(['vm-templates/desktop-lab.yaml', 'vm-templates/medium.yaml', 'vm-templates/small.yaml']);
    expect(shown.template).toMatchObject({ cpus: 2, memory: '4GiB', graphics: 'spice', machine: 'q35', disks: [{ name: 'root', size: '20GiB' }] });
    expect(shown.template).not.toHaveProperty('extends');
    // a default the schema filled in (small.yaml has no runcmd)
    expect(shown.template).toMatchObject({ cloudInit: { runcmd: [] } });
    expect(shown.spec.memoryMiB).toBe(4096);

    const text = templateYaml(shown);
    expect(text.split('\n').slice(0, 5)).toEqual([
      '# template "desktop-lab" (shipped), resolved after extends and defaults',
      '# extends: desktop-lab → medium → small',
      '# vm-templates/desktop-lab.yaml',
      '# vm-templates/medium.yaml',
      '# vm-templates/small.yaml',
    ]);
    expect(parse(text)).toEqual(shown.template);
    const again = validateTemplate(parse(text));
    expect(again.ok && again.value).toEqual(shown.spec);
  });

  it('an unknown name is NOT_FOUND listing the available templates', async () => {
    const err = await showTemplate('nope', [userDir({ extra: 'extends: small\n' }), SHIPPED_TEMPLATE_DIR]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmctlError);
    expect((err as VmctlError).code).toBe('NOT_FOUND');
    expect((err as VmctlError).message).toContain('unknown template "nope" (available: default, desktop-lab, extra, medium, small, uefi;');
  });
});
