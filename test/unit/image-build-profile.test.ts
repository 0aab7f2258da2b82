/**
 * `vmctl image build NAME --profile tuned|stock`: what the build script is
 * asked for, where it writes, under which name the result is imported; and
 * the script's own argument handling (it rejects an unknown profile before
 * doing anything, and its tuned profile file exists and parses).
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VmctlError } from '../../src/core/errors.js';
import { buildPlan, buildScriptPath } from '../../src/core/image/images.js';
import { packagePath } from '../../src/core/package-root.js';

describe('image build profiles', () => {
  it('tuned is the default and builds debian-12; stock builds and imports debian-12-stock', () => {
    const env = { ...process.env };
    process.env.VMCTL_CACHE_DIR = '/tmp/vmctl-cache-x';
    try {
      const tuned = buildPlan();
      expect(tuned).toEqual({
        image: 'debian-12',
        profile: 'tuned',
        poolName: 'debian-12',
        out: '/tmp/vmctl-cache-x/images/debian-12.qcow2',
        args: ['debian-12', '--out', '/tmp/vmctl-cache-x/images/debian-12.qcow2', '--profile', 'tuned'],
      });
      expect(buildPlan('debian-12', 'tuned')).toEqual(tuned);
      const stock = buildPlan('debian-12', 'stock');
      expect(stock.poolName).toBe('debian-12-stock');
      expect(stock.out).toBe('/tmp/vmctl-cache-x/images/debian-12-stock.qcow2');
      expect(stock.args).toEqual(['debian-12', '--out', stock.out, '--profile', 'stock']);
    } finally {
      process.env = env;
    }
  });

  it('refuses unknown profiles and images', () => {
    for (const [name, profile, code] of [
      ['debian-12', 'fast', 'INVALID_INPUT'],
      ['ubuntu-22.04', 'tuned', 'UNSUPPORTED'],
    ] as const) {
      let err: unknown;
      try {
        buildPlan(name, profile);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(VmctlError);
      expect((err as VmctlError).code).toBe(code);
    }
  });

  it('the script knows both profiles and rejects others before building', () => {
    const script = buildScriptPath();
    const bad = spawnSync('bash', [script, 'debian-12', '--profile', 'fast'], { encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr.trim().split('\n').at(-1)).toBe('build-image.sh: --profile must be tuned or stock');
    const help = spawnSync('bash', [script, '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stderr).toContain('[--profile tuned|stock]');
    for (const f of [script, join(packagePath('scripts'), 'image', 'profile-tuned.sh'), join(packagePath('scripts'), 'image', 'guest', 'vmctl-seed-early'), join(packagePath('scripts'), 'image', 'guest', 'vmctl-netconf')]) {
      const r = spawnSync('bash', ['-n', f], { encoding: 'utf8' });
      expect(r.status, `${f}: ${r.stderr}`).toBe(0);
    }
    const sh = spawnSync('sh', ['-n', join(packagePath('scripts'), 'image', 'guest', 'vmctl-seed-early')], { encoding: 'utf8' });
    expect(sh.status, sh.stderr).toBe(0);
  });
});
