/** Throwaway template directories for tests: `templateDir({ name: yaml })`, all removed after the test file. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';

const roots: string[] = [];
afterAll(() => {
  for (const d of roots.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A fresh directory holding the given templates (name → YAML text). */
export function templateDir(files: Record<string, string>): string {
  const d = mkdtempSync(path.join(tmpdir(), 'vmctl-tpl-'));
  roots.push(d);
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(d, `${name}.yaml`), text);
  return d;
}
