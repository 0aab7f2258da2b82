/**
 * Labs end to end on the real libvirtd under TCG, through the CLI only:
 * - a 3-VM lab (test/fixtures/labs/trio.yaml: two VMs on one isolated network, a
 *   third after them on another): lab up completes, a second lab up changes
 *   nothing; check fails before and passes after the scripted solution; lab
 *   reset brings back what was there at the baseline; a lab snapshot with one
 *   VM made to fail leaves no partial snapshot and every VM running; lab down
 *   leaves no domain, volume, network, record or client state; a VM deleted from
 *   the lab is made again by lab up (and only it).
 * - a 1-VM lab (solo.yaml, an isolated and a NAT network) under two prefixes at
 *   once (the NAT subnet moves for the second), kill -9 during lab up at several
 *   points then lab down leaves nothing, Ctrl-C during lab up leaves nothing,
 *   and host-side checks run only after --trust; kill -9 during lab down (after
 *   marking the record, after removing the VMs), then lab down finishes it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../_helpers/rig.js';
import { ensureBuilt, startVmctl, vmctl } from '../_helpers/vmctl.js';

const virsh = (...args: string[]) => execFileSync('virsh', ['-c', 'qemu:///system', ...args], { encoding: 'utf8' });
const lines = (s: string) => s.split('\n').map((l) => l.trim()).filter(Boolean);
const domains = () => lines(virsh('list', '--all', '--name'));
const networks = () => lines(virsh('net-list', '--all', '--name'));
const volumes = () =>
  virsh('vol-list', 'vmctl')
    .split('\n')
    .slice(2)
    .map((l) => l.trim().split(/\s+/)[0]!)
    .filter(Boolean);
const labSecrets = () => lines(virsh('secret-list')).filter((l) => l.includes('vmctl-lab/'));
const TRIO = join(repoRoot, 'test/fixtures/labs/trio.yaml');
const SOLO = join(repoRoot, 'test/fixtures/labs/solo.yaml');

/** everything a lab with this id could have left on the host */
function leftovers(id: string, dataDir: string): string[] {
  const vmsDir = join(dataDir, 'vms');
  const state = existsSync(vmsDir) ? readdirSync(vmsDir).flatMap((c) => readdirSync(join(vmsDir, c)).map((v) => `state:${v}`)) : [];
  return [
    ...domains().filter((d) => d.startsWith(`${id}-`)).map((d) => `domain:${d}`),
    ...networks().filter((n) => n.startsWith(`vmctl-${id}-`)).map((n) => `network:${n}`),
    ...volumes().filter((v) => v.startsWith(`${id}-`)).map((v) => `volume:${v}`),
    ...labSecrets().filter((s) => s.includes(`vmctl-lab/${id} `) || s.endsWith(`vmctl-lab/${id}`)).map((s) => `record:${s}`),
    // leases a killed command held: on the lab, and on its VMs (gone with them, so never taken over)
    ...lines(virsh('secret-list')).filter((l) => l.includes(`vmctl-lease/vm/${id}-`) || l.endsWith(`vmctl-lease/lab/${id}`)).map((s) => `lease:${s}`),
    ...state.filter((s) => s.startsWith(`state:${id}-`)),
  ];
}

describe('labs (TCG)', () => {
  let env: NodeJS.ProcessEnv;
  let dataDir: string;
  const run = (args: string[], timeoutMs = 20 * 60_000) => vmctl(args, { env, timeoutMs });

  const OURS = [['trio', 'lt'], ['solo', 'la'], ['solo', 'lb'], ['solo', 'lk']] as const;

  beforeAll(async () => {
    ensureBuilt();
    dataDir = mkdtempSync(join(tmpdir(), 'vmctl-lab-'));
    env = { VMCTL_CACHE_DIR: join(repoRoot, '.cache'), VMCTL_DATA_DIR: dataDir, LIBVIRT_DEFAULT_URI: 'qemu:///system' };
    // a run of this file that was killed (CI stopped, the machine reused) leaves its labs up: they
    // are this file's own (its prefixes), so lab down — the command a user would run — removes them
    for (const [lab, prefix] of OURS) {
      const id = `${prefix}-${lab}`;
      if (leftovers(id, dataDir).length === 0) continue;
      const down = await run(['lab', 'down', lab, '--prefix', prefix], 5 * 60_000);
      const left = leftovers(id, dataDir);
      if (left.length) throw new Error(`lab ${id} of an earlier run is still on this host (${left.join(', ')}); lab down said: ${down.stderr.trim()}`);
    }
  });

  afterAll(async () => {
    for (const [lab, prefix] of OURS) await run(['lab', 'down', lab, '--prefix', prefix]);
    rmSync(dataDir, { recursive: true, force: true });
  });

  describe('a 3-VM lab', () => {
    const lab = (verb: string, ...a: string[]) => run(['lab', verb, '--prefix', 'lt', ...a]);
    const ssh = async (vm: string, cmd: string) => {
      const r = await lab('ssh', 'trio', vm, '--', cmd);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout;
    };
    const snapshotsOf = (vm: string) => lines(virsh('snapshot-list', vm, '--name')).sort();

    it('lab up brings up 3 VMs on their networks, side by side, and takes a baseline', { timeout: 25 * 60_000 }, async () => {
      const r = await run(['lab', 'up', TRIO, '--prefix', 'lt', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const up = JSON.parse(r.stdout) as { id: string; vms: { key: string; name: string; addresses: Record<string, string> }[]; unchanged: boolean };
      expect(up.unchanged).toBe(false);
      expect(up.vms.map((v) => v.key).sort()).toEqual(['alpha', 'beta', 'gamma']);
      expect(up.vms.find((v) => v.key === 'alpha')!.addresses).toEqual({ inner: '10.77.0.5' });
      for (const v of up.vms) {
        expect(virsh('domstate', v.name).trim()).toBe('running');
        expect(snapshotsOf(v.name)).toEqual(['baseline']);
      }
      // isolated networks: no address of the host on them
      for (const n of ['inner', 'side']) expect(virsh('net-dumpxml', `vmctl-lt-trio-${n}`)).not.toMatch(/<ip /);
      expect(await ssh('beta', 'hostname; cat /etc/trio-role')).toBe('beta\nbeta\n');
    });

    it('lab up again changes nothing', { timeout: 5 * 60_000 }, async () => {
      const before = domains().filter((d) => d.startsWith('lt-trio-')).map((d) => virsh('domuuid', d).trim());
      const r = await run(['lab', 'up', TRIO, '--prefix', 'lt']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/is up already: nothing changed/);
      expect(domains().filter((d) => d.startsWith('lt-trio-')).map((d) => virsh('domuuid', d).trim())).toEqual(before);
      for (const d of ['alpha', 'beta', 'gamma']) expect(snapshotsOf(`lt-trio-${d}`)).toEqual(['baseline']);
      // without its prefix (or by its id) the lab is not found, and the error says how to reach it
      for (const args of [['trio'], ['lt-trio']]) {
        const st = await run(['lab', 'status', ...args, '--prefix', 'nobody']);
        expect(st.code).toBe(3);
        expect(st.stderr).toMatch(/no lab 'nobody-(lt-)?trio'.*there is lab trio with --prefix lt: give the lab's name and that --prefix/);
      }
    });

    it('lab check fails before the exercise is done and passes after it', { timeout: 10 * 60_000 }, async () => {
      const before = await lab('check', 'trio', '--json');
      expect(before.code).toBe(1); // one failed check
      const b = JSON.parse(before.stdout) as { failed: number; results: { check: string; passed: boolean; hint?: string }[] };
      expect(b.results.filter((x) => !x.passed).map((x) => x.check)).toEqual(['alpha has the marker']);
      expect(b.results.find((x) => !x.passed)!.hint).toBe('touch /tmp/marker');
      const ko = await lab('check', 'trio', '--lang', 'ko');
      expect(ko.stdout).toMatch(/hint: touch \/tmp\/marker 를 실행하세요/);
      const solved = await lab('solve', 'trio');
      expect(solved.code, solved.stderr).toBe(0);
      const after = await lab('check', 'trio');
      expect(after.code, after.stdout + after.stderr).toBe(0);
      expect(after.stdout).toMatch(/4\/4 checks passed/);
    });

    it('lab reset brings back the baseline: files written after it are gone', { timeout: 10 * 60_000 }, async () => {
      await ssh('alpha', 'echo later > /tmp/later && sync');
      const r = await lab('reset', 'trio');
      expect(r.code, r.stderr).toBe(0);
      expect((await lab('ssh', 'trio', 'alpha', '--', 'test -e /tmp/later || test -e /tmp/marker')).code).toBe(1);
      for (const d of ['alpha', 'beta', 'gamma']) expect(virsh('domstate', `lt-trio-${d}`).trim()).toBe('running');
      expect((await lab('check', 'trio')).code).toBe(1);
    });

    it('a lab snapshot that fails on one VM leaves no partial snapshot, and every VM running', { timeout: 10 * 60_000 }, async () => {
      const r = await vmctl(['lab', 'snapshot', 'trio', 'half', '--prefix', 'lt'], { env: { ...env, VMCTL_FAULT: 'lab-snapshot:after-snapshot-beta:throw' }, timeoutMs: 10 * 60_000 });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/fault point lab-snapshot:after-snapshot-beta/);
      for (const d of ['alpha', 'beta', 'gamma']) {
        expect(snapshotsOf(`lt-trio-${d}`)).toEqual(['baseline']);
        expect(virsh('domstate', `lt-trio-${d}`).trim()).toBe('running');
      }
      const ok = await lab('snapshot', 'trio', 'whole');
      expect(ok.code, ok.stderr).toBe(0);
      for (const d of ['alpha', 'beta', 'gamma']) expect(snapshotsOf(`lt-trio-${d}`)).toEqual(['baseline', 'whole']);
      const st = JSON.parse((await lab('status', 'trio', '--json')).stdout) as { snapshots: string[]; state: string };
      expect(st).toMatchObject({ snapshots: ['baseline', 'whole'], state: 'ready' });
    });

    it('kill -9 during a lab snapshot: the next lab command resumes the VMs and removes the half-taken snapshot', { timeout: 10 * 60_000 }, async () => {
      const r = await vmctl(['lab', 'snapshot', 'trio', 'killed', '--prefix', 'lt'], { env: { ...env, VMCTL_FAULT: 'lab-snapshot:after-snapshot-alpha:kill' }, timeoutMs: 10 * 60_000 });
      expect(r.code).toBe(128); // killed by a signal
      const next = await lab('snapshot', 'trio', 'again');
      expect(next.code, next.stderr).toBe(0);
      expect(next.stderr).toMatch(/interrupted; removing it and resuming/);
      for (const d of ['alpha', 'beta', 'gamma']) {
        expect(snapshotsOf(`lt-trio-${d}`)).toEqual(['again', 'baseline', 'whole']);
        expect(virsh('domstate', `lt-trio-${d}`).trim()).toBe('running');
      }
    });

    it('a VM deleted from a lab that is up: lab up makes it again from the lab file (cattle), and only it', { timeout: 15 * 60_000 }, async () => {
      const uuid = (d: string) => virsh('domuuid', d).trim();
      const others = { alpha: uuid('lt-trio-alpha'), gamma: uuid('lt-trio-gamma') };
      const old = uuid('lt-trio-beta');
      expect((await run(['delete', 'lt-trio-beta'])).code).toBe(0);
      const r = await run(['lab', 'up', TRIO, '--prefix', 'lt', '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ unchanged: false, replaced: ['beta'] });
      expect(r.stderr).toMatch(/VM beta is gone; making it again from the lab file/);
      expect(uuid('lt-trio-beta')).not.toBe(old);
      expect({ alpha: uuid('lt-trio-alpha'), gamma: uuid('lt-trio-gamma') }).toEqual(others);
      // the lab's own again: its cloud-init, its address on the lab network, its own baseline
      expect(await ssh('beta', 'cat /etc/trio-role')).toBe('beta\n');
      expect((await lab('ssh', 'trio', 'beta', '--', "timeout 5 bash -c '</dev/tcp/alpha/22'")).code).toBe(0);
      expect(snapshotsOf('lt-trio-beta')).toEqual(['baseline']);
      const st = JSON.parse((await lab('status', 'trio', '--json')).stdout) as { state: string };
      expect(st.state).toBe('ready');
      // a lab snapshot taken before the replacement does not hold the new VM: reset to it is refused, baseline works
      const refused = await lab('reset', 'trio', 'whole');
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toMatch(/was taken before beta was replaced/);
      expect((await lab('reset', 'trio')).code).toBe(0);
      // whole again: the next lab up changes nothing
      expect((await run(['lab', 'up', TRIO, '--prefix', 'lt'])).stdout).toMatch(/nothing changed/);
    });

    it('lab down removes exactly what the lab made', { timeout: 10 * 60_000 }, async () => {
      const others = { domains: domains().filter((d) => !d.startsWith('lt-trio-')), networks: networks().filter((n) => !n.startsWith('vmctl-lt-trio-')) };
      const r = await lab('down', 'trio');
      expect(r.code, r.stderr).toBe(0);
      expect(leftovers('lt-trio', dataDir)).toEqual([]);
      // nothing else was touched
      expect(domains().filter((d) => others.domains.includes(d))).toEqual(others.domains.filter((d) => domains().includes(d)));
      expect(networks()).toEqual(expect.arrayContaining(others.networks));
    });
  });

  describe('prefixes, trust, kill -9 and Ctrl-C (a 1-VM lab)', () => {
    it('kill -9 at each step of lab up, then lab down: nothing is left', { timeout: 15 * 60_000 }, async () => {
      for (const point of ['after-record', 'after-networks', 'after-define', 'after-volumes']) {
        const r = await vmctl(['lab', 'up', SOLO, '--prefix', 'lk'], { env: { ...env, VMCTL_FAULT: `lab-up:${point}:kill` }, timeoutMs: 10 * 60_000 });
        expect(r.code, `${point}: ${r.stderr}`).toBe(128); // killed by a signal
        const list = await vmctl(['lab', 'list', '--json'], { env });
        expect(JSON.parse(list.stdout)).toEqual(expect.arrayContaining([expect.objectContaining({ id: 'lk-solo', state: 'interrupted' })]));
        const down = await vmctl(['lab', 'down', 'solo', '--prefix', 'lk'], { env, timeoutMs: 5 * 60_000 });
        expect(down.code, `${point}: ${down.stderr}`).toBe(0);
        expect(leftovers('lk-solo', dataDir), point).toEqual([]);
      }
    });

    it('Ctrl-C while the VM boots, or while it waits for cloud-init, undoes the whole lab at once', { timeout: 10 * 60_000 }, async () => {
      for (const at of ['one: started', 'one: waiting for cloud-init']) {
        const p = startVmctl(['lab', 'up', SOLO, '--prefix', 'lk', '--progress', 'plain'], env);
        await p.waitFor(at, 5 * 60_000);
        p.kill('SIGINT');
        expect(await p.done, at).toBe(130);
        // the wait stopped when interrupted: it did not go on until cloud-init was done
        expect(p.stderr(), at).not.toMatch(/one: cloud-init\s/);
        expect(p.stderr(), at).toMatch(/undone\s+domain lk-solo-one/);
        expect(leftovers('lk-solo', dataDir), at).toEqual([]);
      }
    });

    it('two prefixes run the same lab side by side (the NAT subnet moves); host checks need --trust', { timeout: 20 * 60_000 }, async () => {
      const [a, b] = await Promise.all([
        vmctl(['lab', 'up', SOLO, '--prefix', 'la', '--json'], { env, timeoutMs: 20 * 60_000 }),
        vmctl(['lab', 'up', SOLO, '--prefix', 'lb', '--trust', '--json'], { env, timeoutMs: 20 * 60_000 }),
      ]);
      expect(a.code, a.stderr).toBe(0);
      expect(b.code, b.stderr).toBe(0);
      expect(a.stderr).toMatch(/will not run unless you bring it up with --trust/);
      expect(b.stderr).toMatch(/--trust: this lab's 1 host command/);
      const subnet = (p: string) => (JSON.parse(p) as { networks: { key: string; subnet: string }[] }).networks.find((n) => n.key === 'out')!.subnet;
      expect(new Set([subnet(a.stdout), subnet(b.stdout)]).size).toBe(2);
      for (const p of ['la', 'lb']) {
        expect((await vmctl(['lab', 'solve', 'solo', '--prefix', p], { env, timeoutMs: 5 * 60_000 })).code).toBe(0); // a guest step: no trust needed
      }
      const ca = await vmctl(['lab', 'check', 'solo', '--prefix', 'la', '--json'], { env, timeoutMs: 5 * 60_000 });
      const cb = await vmctl(['lab', 'check', 'solo', '--prefix', 'lb', '--json'], { env, timeoutMs: 5 * 60_000 });
      expect(cb.code, cb.stdout).toBe(0);
      expect(ca.code).toBe(1);
      expect((JSON.parse(ca.stdout) as { results: { notRun?: string }[] }).results[1]!.notRun).toMatch(/--trust/);
      // each lab is its own: the same VM key under two names, two networks each
      expect(domains()).toEqual(expect.arrayContaining(['la-solo-one', 'lb-solo-one']));
      // lab down killed (kill -9) once it has marked the record, and once the VMs are gone: the lab
      // shows as interrupted, and the next lab down finishes the job
      for (const [p, point] of [['la', 'after-mark'], ['lb', 'after-vms']] as const) {
        const killed = await vmctl(['lab', 'down', 'solo', '--prefix', p], { env: { ...env, VMCTL_FAULT: `lab-down:${point}:kill` }, timeoutMs: 5 * 60_000 });
        expect(killed.code, `${point}: ${killed.stderr}`).toBe(128);
        const list = await vmctl(['lab', 'list', '--json'], { env });
        expect(JSON.parse(list.stdout)).toEqual(expect.arrayContaining([expect.objectContaining({ id: `${p}-solo`, state: 'interrupted' })]));
        const down = await vmctl(['lab', 'down', 'solo', '--prefix', p], { env, timeoutMs: 5 * 60_000 });
        expect(down.code, `${point}: ${down.stderr}`).toBe(0);
        expect(leftovers(`${p}-solo`, dataDir), point).toEqual([]);
      }
    });
  });
});
