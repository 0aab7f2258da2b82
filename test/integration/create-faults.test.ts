/**
 * Operations that survive anything (issue: kill -9 during create stranded the
 * name): `vmctl create` killed with SIGKILL at each of its steps (the
 * VMCTL_FAULT knob stops it there deterministically), and libvirtd restarted in
 * the middle of one. Each time `list` shows the VM as incomplete (which command,
 * which step), `create` of the name says how to clear it, `host check` lists it,
 * `delete` removes exactly it, the pool holds nothing else, and a new create of
 * the name works. Two creates of one name at once: one wins, the loser removes
 * nothing of the winner's. All against the real libvirtd.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureRig, repoRoot, type RigEnv } from '../_helpers/rig.js';
import { ensureBuilt, startVmctl, vmctl } from '../_helpers/vmctl.js';

const URI = 'qemu:///system';
const virsh = (uri: string, ...args: string[]) => execFileSync('virsh', ['-c', uri, ...args], { encoding: 'utf8' });
const domains = (uri = URI) => virsh(uri, 'list', '--all', '--name').split('\n').filter(Boolean).sort();
const volumes = (uri = URI) =>
  virsh(uri, 'vol-list', 'vmctl')
    .split('\n')
    .slice(2)
    .map((l) => l.trim().split(/\s+/)[0]!)
    .filter(Boolean)
    .sort();
// leases of this file's VMs (other vmctl commands may hold theirs meanwhile)
const secrets = (uri = URI) => virsh(uri, 'secret-list').split('\n').filter((l) => /vmctl-lease\/vm\/flt\d/.test(l));

interface ListedVm {
  name: string;
  incomplete?: { op: string; step: string; running: string };
}

describe('create interrupted at every step', () => {
  let env: NodeJS.ProcessEnv;
  let dataDir: string;
  const VM = 'flt1';

  beforeAll(async () => {
    ensureBuilt();
    dataDir = mkdtempSync(join(tmpdir(), 'vmctl-faults-'));
    env = { VMCTL_CACHE_DIR: join(repoRoot, '.cache'), VMCTL_DATA_DIR: dataDir, LIBVIRT_DEFAULT_URI: URI };
    for (const d of ['flt1', 'flt2']) if (domains().includes(d)) throw new Error(`a domain named ${d} exists; remove it before running this test`);
    // the shared image in the pool, so every run below starts from the same place
    const r = await vmctl(['create', VM, '--accel', 'tcg', '--no-start'], { env, timeoutMs: 300_000 });
    expect(r.code, r.stderr).toBe(0);
    expect((await vmctl(['delete', VM], { env })).code).toBe(0);
  });

  afterAll(async () => {
    for (const d of ['flt1', 'flt2']) if (domains().includes(d)) await vmctl(['delete', d], { env });
    rmSync(dataDir, { recursive: true, force: true });
  });

  const points: [string, string, string[]][] = [
    // point, the step the marker names, the args (after-start needs a start)
    ['after-define', 'define', ['--no-start']],
    ['after-keys', 'keys', ['--no-start']],
    ['after-disk', 'volumes', ['--no-start']],
    ['after-volumes', 'volumes', ['--no-start']],
    ['after-start', 'start', ['--wait', 'none']],
  ];

  for (const [point, step, args] of points) {
    it(`killed ${point}: list shows it incomplete, create names the fix, delete removes exactly it, create works again`, async () => {
      const before = { domains: domains(), volumes: volumes() };
      const killed = await vmctl(['create', VM, '--accel', 'tcg', ...args], { env: { ...env, VMCTL_FAULT: `create:${point}:kill` } });
      expect(killed.stderr).toContain(`fault point create:${point} (kill)`);
      expect(killed.code).toBe(128); // killed by a signal (the helper maps signals to 128)

      const list = await vmctl(['list', '--json'], { env });
      expect(list.code, list.stderr).toBe(0);
      const listed = (JSON.parse(list.stdout) as ListedVm[]).find((v) => v.name === VM);
      expect(listed?.incomplete).toMatchObject({ op: 'create', step, running: 'no' });
      const human = await vmctl(['list'], { env });
      expect(human.stdout).toMatch(new RegExp(`${VM}\\s+incomplete \\(create: ${step}, interrupted\\)`));

      const again = await vmctl(['create', VM, '--accel', 'tcg', '--no-start'], { env });
      expect(again.code).toBe(4);
      expect(again.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(`'${VM}' is an incomplete VM .*stopped at step '${step}'.*vmctl delete ${VM} removes what that command made`));

      if (point === 'after-volumes') {
        const check = await vmctl(['host', 'check', '--no-probe', '--json'], { env });
        const c = (JSON.parse(check.stdout) as { checks: { id: string; status: string; finding: string; fix?: string }[] }).checks.find((x) => x.id === 'interrupted');
        expect(c?.status).toBe('WARN');
        expect(c?.finding).toContain(`${VM}: vmctl create`);
        expect(c?.fix).toContain(`vmctl delete ${VM}`);
      }

      const del = await vmctl(['delete', VM], { env });
      expect(del.code, del.stderr).toBe(0);
      expect(del.stdout).toContain(`incomplete: vmctl create had stopped at '${step}'`);
      expect({ domains: domains(), volumes: volumes() }).toEqual(before);
      expect(secrets()).toEqual([]);

      const ok = await vmctl(['create', VM, '--accel', 'tcg', '--no-start'], { env });
      expect(ok.code, ok.stderr).toBe(0);
      expect((await vmctl(['delete', VM], { env })).code).toBe(0);
      expect({ domains: domains(), volumes: volumes() }).toEqual(before);
    });
  }

  it('delete itself killed half-way is finished by running it again', async () => {
    const before = { domains: domains(), volumes: volumes() };
    expect((await vmctl(['create', VM, '--accel', 'tcg', '--no-start'], { env })).code).toBe(0);
    const killed = await vmctl(['delete', VM], { env: { ...env, VMCTL_FAULT: 'delete:after-volume:kill' } });
    expect(killed.code).toBe(128);
    const listed = (JSON.parse((await vmctl(['list', '--json'], { env })).stdout) as ListedVm[]).find((v) => v.name === VM);
    expect(listed?.incomplete).toMatchObject({ op: 'delete', step: 'volumes' });
    expect((await vmctl(['delete', VM], { env })).code).toBe(0);
    expect({ domains: domains(), volumes: volumes() }).toEqual(before);
  });

  it('a failure after the volumes undoes everything the command made (fault: throw)', async () => {
    const before = { domains: domains(), volumes: volumes() };
    const r = await vmctl(['create', VM, '--accel', 'tcg', '--no-start', '--progress', 'plain'], { env: { ...env, VMCTL_FAULT: 'create:after-volumes:throw' } });
    expect(r.code).toBe(70);
    expect(r.stderr).toContain(`undone     volume ${VM}-root.qcow2`);
    expect(r.stderr).toContain(`undone     domain ${VM}`);
    expect({ domains: domains(), volumes: volumes() }).toEqual(before);
  });

  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    it(`${sig} in the middle undoes everything, exit 130, one line`, async () => {
      const before = { domains: domains(), volumes: volumes() };
      const child = startVmctl(['create', VM, '--accel', 'tcg', '--no-start', '--progress', 'plain'], { ...env, VMCTL_FAULT: 'create:after-volumes:sleep=5000' });
      await child.waitFor('fault point create:after-volumes');
      child.kill(sig);
      expect(await child.done).toBe(130);
      const err = child.stderr();
      expect(err).toContain(`undone     volume ${VM}-seed.iso`);
      expect(err.trim().split('\n').at(-1)).toBe('vmctl: create interrupted (nothing it made was left behind)');
      expect({ domains: domains(), volumes: volumes() }).toEqual(before);
      expect(secrets()).toEqual([]);
    });
  }

  it('two creates of one name at once: one wins, the loser says who holds it and removes nothing', async () => {
    const first = startVmctl(['create', VM, '--accel', 'tcg', '--no-start', '--progress', 'plain'], { ...env, VMCTL_FAULT: 'create:after-define:sleep=4000' });
    try {
      await first.waitFor('fault point create:after-define');

    const second = await vmctl(['create', VM, '--accel', 'tcg', '--no-start'], { env });
    expect(second.code).toBe(4);
    expect(second.stderr).toMatch(new RegExp(`VM '${VM}' is busy: vmctl create by \\S+ pid ${first.pid}`));

      expect(await first.done).toBe(0);
    } finally {
      first.kill('SIGKILL');
    }
    const info = JSON.parse((await vmctl(['info', VM, '--json'], { env })).stdout) as { incomplete?: string; disks: unknown[] };
    expect(info.incomplete).toBeUndefined();
    expect(volumes()).toEqual(expect.arrayContaining([`${VM}-root.qcow2`, `${VM}-seed.iso`]));
    expect((await vmctl(['delete', VM], { env })).code).toBe(0);
  });

  it('--dry-run validates and prints the plan, and makes nothing', async () => {
    const before = { domains: domains(), volumes: volumes() };
    const r = await vmctl(['create', VM, '--accel', 'tcg', '--dry-run', '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { dryRun: boolean; plan: { name: string; volumes: { name: string }[]; wait: string } };
    expect(out.dryRun).toBe(true);
    expect(out.plan.volumes.map((v) => v.name)).toEqual([`${VM}-root.qcow2`, `${VM}-seed.iso`]);
    expect(out.plan.wait).toBe('ssh');
    expect({ domains: domains(), volumes: volumes() }).toEqual(before);
    const bad = await vmctl(['create', 'Bad_Name', '--dry-run'], { env });
    expect(bad.code).toBe(2);
  });

  it('--progress json streams the events as NDJSON on stderr', async () => {
    const r = await vmctl(['create', VM, '--accel', 'tcg', '--no-start', '--progress', 'json'], { env });
    expect(r.code, r.stderr).toBe(0);
    const events = r.stderr
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; op: string; phase?: string; step?: string; state?: string; atMs: number });
    expect(events.every((e) => e.op === 'create' && typeof e.atMs === 'number')).toBe(true);
    expect(events.some((e) => e.type === 'phase' && e.phase === 'defined')).toBe(true);
    expect(events.some((e) => e.type === 'step' && e.step === 'plan' && e.state === 'end')).toBe(true);
    expect((await vmctl(['delete', VM], { env })).code).toBe(0);
  });
});

describe('libvirtd restarted in the middle of a create (rig host1)', () => {
  let rig: RigEnv;
  let env: NodeJS.ProcessEnv;
  let dataDir: string;
  const VM = 'flt2';

  beforeAll(async () => {
    ensureBuilt();
    rig = await ensureRig();
    dataDir = mkdtempSync(join(tmpdir(), 'vmctl-faults-'));
    env = { VMCTL_CACHE_DIR: join(repoRoot, '.cache'), VMCTL_DATA_DIR: dataDir, LIBVIRT_DEFAULT_URI: rig.unixUri };
    // the image on that host first (an upload), so the restart lands in create's own steps
    const r = await vmctl(['create', VM, '--accel', 'tcg', '--no-start'], { env, timeoutMs: 300_000 });
    expect(r.code, r.stderr).toBe(0);
    expect((await vmctl(['delete', VM], { env })).code).toBe(0);
  });

  afterAll(async () => {
    if (rig && domains(rig.unixUri).includes(VM)) await vmctl(['delete', VM], { env });
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('the command fails with one line, undoes what it made once the daemon is back, and the name works again', async () => {
    const uri = rig.unixUri;
    const before = { domains: domains(uri), volumes: volumes(uri) };
    const child = startVmctl(['create', VM, '--accel', 'tcg', '--no-start', '--progress', 'plain'], { ...env, VMCTL_FAULT: 'create:after-keys:sleep=3000' });
    await child.waitFor('fault point create:after-keys');

    // restart host1's libvirtd while create sleeps (only the daemon, as `systemctl restart libvirtd`): its connection dies under it
    execFileSync('bash', [join(repoRoot, 'scripts', 'test-rig.sh'), 'restart-libvirtd', 'host1'], { stdio: 'ignore' });

    expect(await child.done).toBe(5); // CONNECTION
    const err = child.stderr();
    const last = err.trim().split('\n').at(-1)!;
    expect(last).toMatch(/^vmctl: connection to .* closed: the daemon closed the connection \(libvirtd stopped or restarted under the command: check it runs \(virsh version\), then run the command again\)$/);
    // undo ran on a new connection: nothing of it is left
    expect(err).toContain(`undone     domain ${VM}`);
    expect({ domains: domains(uri), volumes: volumes(uri) }).toEqual(before);
    const ok = await vmctl(['create', VM, '--accel', 'tcg', '--no-start'], { env });
    expect(ok.code, ok.stderr).toBe(0);
    expect((await vmctl(['delete', VM], { env })).code).toBe(0);
    expect({ domains: domains(uri), volumes: volumes(uri) }).toEqual(before);
  });
});
