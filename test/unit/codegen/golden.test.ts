/**
 * Golden tests: the generator's output for the fixtures must match the
 * committed *.expected.ts byte for byte. UPDATE_GOLDEN=1 rewrites them.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { summarize } from '../../../scripts/codegen/main.js';
import { FIXTURE_DIR, generateFixtures } from './harness.js';

const update = process.env['UPDATE_GOLDEN'] === '1';
const { files, modules } = generateFixtures();

describe('codegen golden files', () => {
  for (const f of files) {
    it(`${f.name} matches the generator output`, () => {
      const path = join(FIXTURE_DIR, f.name);
      if (update) writeFileSync(path, f.content);
      expect(existsSync(path), `${f.name} is missing: run UPDATE_GOLDEN=1 npx vitest run test/unit/codegen`).toBe(true);
      const have = readFileSync(path, 'utf8');
      if (have !== f.content) {
        expect.fail(`${f.name} differs from the generator output (UPDATE_GOLDEN=1 to accept):\n${summarize(have, f.content)}`);
      }
    });
  }

  it('generation is deterministic', () => {
    const again = generateFixtures().files;
    expect(again).toEqual(files);
  });

  it('classifies the fixture procedures', () => {
    const prog = modules.find((m) => m.id === 'program');
    expect(prog?.procedures.map((p) => [p.constName, p.method, p.stream, p.priority])).toEqual([
      ['FIX_PROC_CONNECT_OPEN', 'connectOpen', null, true],
      ['FIX_PROC_CONNECT_CLOSE', 'connectClose', null, true],
      ['FIX_PROC_DOMAIN_LOOKUP_BY_NAME', 'domainLookupByName', null, true],
      ['FIX_PROC_LIST_THINGS', 'listThings', null, false],
      ['FIX_PROC_VOL_UPLOAD', 'volUpload', 'write', false],
      ['FIX_PROC_VOL_DOWNLOAD', 'volDownload', 'read', false],
      ['FIX_PROC_OPEN_CONSOLE', 'openConsole', 'both', false],
      ['FIX_PROC_PING', 'ping', null, false],
    ]);
    expect(prog?.events.map((e) => [e.constName, e.msg])).toEqual([
      ['FIX_PROC_EVENT_LIFECYCLE', 'fix_event_lifecycle_msg'],
      ['FIX_PROC_EVENT_REBOOT', 'fix_event_reboot_msg'],
    ]);
    expect(prog?.warnings).toEqual([]);
  });
});
