/** src/core/lab/validate.gen.ts is ajv standalone code generated from src/core/lab/schema.ts: never stale, nothing needed at run time. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generateLabValidator, LAB_VALIDATOR_FILE, LAB_VALIDATOR_PATH } from '../../../scripts/codegen-templates.js';
import { summarize } from '../../../scripts/codegen/main.js';

describe('generated lab validator', () => {
  it(`${LAB_VALIDATOR_FILE} matches the generator output byte for byte`, () => {
    const want = generateLabValidator();
    const have = readFileSync(LAB_VALIDATOR_PATH, 'utf8');
    if (have !== want) expect.fail(`${LAB_VALIDATOR_FILE} is stale: run npm run codegen:templates\n${summarize(have, want)}`);
  });

  it('generation is deterministic and needs nothing at run time', () => {
    const code = generateLabValidator();
    expect(generateLabValidator()).toBe(code);
    expect(code).not.toMatch(/\brequire\(/);
    expect(code.match(/^import .*$/gm)).toEqual(["import type { ErrorObject } from 'ajv';"]);
  });
});
