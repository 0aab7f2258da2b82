/**
 * The layering and `.remote` rules of eslint.config.js fire (and stay quiet
 * where they should): ESLint's Node API lints snippets as if they were files
 * at the given paths.
 */
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const eslint = new ESLint({ cwd: root });

async function ruleHits(filePath: string, code: string): Promise<{ ruleId: string | null; message: string }[]> {
  const [result] = await eslint.lintText(code, { filePath: `${root}${filePath}` });
  return (result?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-imports' || m.ruleId === 'no-restricted-syntax');
}

describe('eslint layering rules (cli → core → libvirt)', () => {
  it('src/libvirt importing from src/core is an error', async () => {
    const hits = await ruleHits('src/libvirt/connection.ts', "import { silentLogger } from '../core/log.js';\nexport const l = silentLogger;\n");
    expect(hits).toHaveLength(1);
    expect(hits[0]).toMatchObject({ ruleId: 'no-restricted-imports' });
    expect(hits[0]?.message).toMatch(/src\/libvirt is the bottom layer/);
  });

  it('src/libvirt/objects importing from src/cli (type-only, re-export) is an error', async () => {
    const code = "import type { Context } from '../../cli/context.js';\nexport type C = Context;\nexport { makeContext } from '../../cli/context.js';\n";
    expect(await ruleHits('src/libvirt/objects/domain.ts', code)).toHaveLength(2);
  });

  it('src/core importing from src/cli is an error, from src/libvirt is fine', async () => {
    const bad = await ruleHits('src/core/vm/list.ts', "import { vmCore } from '../../cli/vm-args.js';\nexport const v = vmCore;\n");
    expect(bad).toHaveLength(1);
    expect(bad[0]?.message).toMatch(/src\/core must not import from src\/cli/);
    const ok = "import type { Connection } from '../../libvirt/connection.js';\nimport { silentLogger } from '../log.js';\nexport type C = Connection;\nexport const l = silentLogger;\n";
    expect(await ruleHits('src/core/vm/list.ts', ok)).toEqual([]);
  });

  it('src/cli may import core and libvirt', async () => {
    const code = "import { Connection } from '../libvirt/connection.js';\nimport { createLogger } from '../core/log.js';\nexport const x = [Connection, createLogger];\n";
    expect(await ruleHits('src/cli/context.ts', code)).toEqual([]);
  });
});

describe('eslint: `.remote` only inside src/libvirt', () => {
  const call = "import type { Connection } from '../../libvirt/connection.js';\nexport const f = (conn: Connection) => conn.remote.connectGetLibVersion();\n";
  const destructure = "import type { Connection } from '../libvirt/connection.js';\nexport function f(conn: Connection) {\n  const { remote } = conn;\n  return remote;\n}\n";

  it('conn.remote in src/core and src/cli is an error naming the typed wrappers', async () => {
    const hits = await ruleHits('src/core/vm/list.ts', call);
    expect(hits).toHaveLength(1);
    expect(hits[0]).toMatchObject({ ruleId: 'no-restricted-syntax' });
    expect(hits[0]?.message).toMatch(/src\/libvirt\/objects/);
    expect(await ruleHits('src/cli/commands/list.ts', call)).toHaveLength(1);
    expect(await ruleHits('src/cli/context.ts', destructure)).toHaveLength(1);
  });

  it('inside src/libvirt it is allowed', async () => {
    expect(await ruleHits('src/libvirt/objects/domain.ts', "import type { Connection } from '../connection.js';\nexport const f = (c: Connection) => c.remote;\n")).toEqual([]);
  });
});
