/**
 * Generates the codegen fixtures (test/unit/codegen/fixtures/*.x + fixture.h)
 * exactly as the golden test compares them. Shared by the tests; not a test itself.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCHeaders } from '../../../scripts/codegen/cheader.js';
import { emitConstants } from '../../../scripts/codegen/emit-constants.js';
import { generateModules, type ModuleInput, type ModuleOutput } from '../../../scripts/codegen/emit.js';
import { parseX } from '../../../scripts/codegen/parser.js';

export const FIXTURE_DIR = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

/** The generated fixture modules live next to their inputs, so they import the runtime from there. */
const XDR_IMPORT = '../../../../src/libvirt/xdr/index.js';
const CALLER_IMPORT = '../../../../src/libvirt/rpc/caller.js';

const X_FIXTURES = [
  { id: 'basic', input: 'basic.x' },
  { id: 'unions', input: 'unions.x' },
  {
    id: 'program',
    input: 'program.x',
    program: { className: 'FixProcedures', streamOverrides: { FIX_PROC_OPEN_CONSOLE: 'both' as const } },
  },
] as const;

export interface FixtureOutput {
  /** file name inside FIXTURE_DIR */
  readonly name: string;
  readonly content: string;
}

export function generateFixtures(): { files: FixtureOutput[]; modules: ModuleOutput[] } {
  const header = parseCHeaders([{ file: 'fixture.h', text: readFileSync(join(FIXTURE_DIR, 'fixture.h'), 'utf8') }]);
  const modules: ModuleInput[] = X_FIXTURES.map((f) => ({
    id: f.id,
    x: parseX(readFileSync(join(FIXTURE_DIR, f.input), 'utf8'), f.input),
    origin: `test fixture ${f.input}`,
    importPath: `./${f.id}.expected.js`,
    ...('program' in f ? { program: f.program } : {}),
  }));
  const outs = generateModules({ modules, cConstants: header.values, xdrImport: XDR_IMPORT, callerImport: CALLER_IMPORT });
  const files: FixtureOutput[] = [
    { name: 'fixture-constants.expected.ts', content: emitConstants(header, 'test fixture fixture.h', "fixture 1.0 (it's a test)") },
    ...outs.map((o) => ({ name: `${o.id}.expected.ts`, content: o.code })),
  ];
  return { files, modules: outs };
}
