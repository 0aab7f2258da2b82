/**
 * src/core/template/validate.gen.ts is ajv standalone code generated from
 * src/core/template/schema.ts. It must be exactly what the generator produces
 * now (so it can never go stale), and it must behave like the schema compiled
 * at run time with the same options.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { AJV_OPTIONS, generateTemplateValidator, VALIDATOR_FILE, VALIDATOR_PATH } from '../../../scripts/codegen-templates.js';
import { summarize } from '../../../scripts/codegen/main.js';
import { templateSchema } from '../../../src/core/template/schema.js';
import { validateTemplateSchema } from '../../../src/core/template/validate.gen.js';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host';

describe('generated template validator', () => {
  it(`${VALIDATOR_FILE} matches the generator output byte for byte`, () => {
    const want = generateTemplateValidator();
    const have = readFileSync(VALIDATOR_PATH, 'utf8');
    if (have !== want) expect.fail(`${VALIDATOR_FILE} is stale: run npm run codegen:templates\n${summarize(have, want)}`);
  });

  it('generation is deterministic and needs nothing at run time', () => {
    const code = generateTemplateValidator();
    expect(generateTemplateValidator()).toBe(code);
    expect(code).not.toMatch(/\brequire\(/);
    // the only import is a type import (erased)
    expect(code.match(/^import .*$/gm)).toEqual(["import type { ErrorObject } from 'ajv';"]);
  });

  it('gives the same result, defaults and errors as the schema compiled at run time', () => {
    const ajv = new Ajv({ ...AJV_OPTIONS, code: {} });
    ajv.addVocabulary(['x-error', 'x-unit']);
    const compiled = ajv.compile(templateSchema);
    const docs: unknown[] = [
      {},
      { cpus: 2, memory: '1GiB', cloudInit: { sshKeys: [KEY], packages: ['curl'], runcmd: ['echo hi'] } },
      { cpus: 0, memory: 'lots', machine: 'vax', cpu: 1, disks: [{ name: 'Root', size: -1 }, { size: '1GiB' }] },
      { nics: [{ type: 'user', forwards: [{ host: '10.0.0.1', guestPort: 0 }] }, { type: 'bridge' }, { type: 'wifi' }, {}] },
      { boot: { type: 'kernel' }, description: 'x'.repeat(2000), graphics: 'vnc', serial: 'yes' },
      { boot: { type: 'kernel', kernel: '/k', cmdline: 'a\nb' }, cloudInit: { user: 'Root', hostname: '-x', sshKeys: ['nope'], extra: 1 } },
      { nics: [{ type: 'network', network: 'default', mac: '52:54:00:12:34' }], disks: [{ name: 'root', size: '😀' }] },
      [],
      'not a mapping',
    ];
    const strip = (errors: typeof compiled.errors) => (errors ?? []).map(({ schema: _s, parentSchema, ...e }) => ({ ...e, parentSchema: JSON.stringify(parentSchema) }));
    for (const doc of docs) {
      const a = structuredClone(doc);
      const b = structuredClone(doc);
      const okA = compiled(a);
      const okB = validateTemplateSchema(b);
      expect(okB, JSON.stringify(doc)).toBe(okA);
      expect(b).toEqual(a);
      expect(strip(validateTemplateSchema.errors ?? null)).toEqual(strip(compiled.errors));
    }
  });
});
