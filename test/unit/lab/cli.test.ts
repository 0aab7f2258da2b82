/** The lab commands that need no daemon: validate, show, exercises (languages), available; bad input is one line naming the file and path. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../../_helpers/rig.js';
import { vmctl } from '../../_helpers/vmctl.js';

const dir = mkdtempSync(join(tmpdir(), 'vmctl-labcli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const TRIO = join(repoRoot, 'test/fixtures/labs/trio.yaml');

describe('vmctl lab (no daemon)', () => {
  it('validate: ok, or every problem with file and JSON path, exit 2', { timeout: 60_000 }, async () => {
    const ok = await vmctl(['lab', 'validate', TRIO]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/ok \(3 VM entries, 2 network\(s\), 1 exercise\(s\), 0 host command\(s\)\)/);
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'name: x\nvms:\n  - name: a\n    memory: lots\n    networks: [nowhere]\n');
    const r = await vmctl(['lab', 'validate', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bad\.yaml: \/vms\/0\/memory: must be a size in MiB/);
    const missing = await vmctl(['lab', 'validate', join(dir, 'none.yaml')]);
    expect(missing.code).toBe(3);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('exercises in English and Korean; show lists host commands', { timeout: 60_000 }, async () => {
    const en = await vmctl(['lab', 'exercises', TRIO, '--lang', 'en']);
    expect(en.stdout).toMatch(/## 1\. Leave a marker {2}\[marker\]/);
    const ko = await vmctl(['lab', 'exercises', TRIO], { env: { LANG: 'ko_KR.UTF-8' } });
    expect(ko.stdout).toMatch(/## 1\. 표시 남기기/);
    const show = await vmctl(['lab', 'show', join(repoRoot, 'test/fixtures/labs/solo.yaml')]);
    expect(show.stdout).toMatch(/host commands \(1\):\n {2}\[hello check\] virsh/);
  });
});
