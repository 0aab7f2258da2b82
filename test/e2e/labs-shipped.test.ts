/**
 * The six shipped labs (vm-templates/labs/*.yaml), through the CLI only:
 * - every one validates (schema + cross-field rules), carries its texts in English
 *   and Korean, and `vmctl lab validate NAME` accepts it;
 * - every one, under TCG: `lab up` → `lab check` fails (before the solution) →
 *   `lab solve` → `lab check` passes (exit 0) → `lab down` leaves no domain or
 *   network of the lab behind.
 *   hypervisor-basics, emulation-vs-virtio, two-tier and pets-vs-cattle run on the
 *   machine's libvirtd (qemu:///system); snapshot-dr too, restoring onto the rig's
 *   host1 (its unix URI: a second libvirtd whose guests' SSH forwards are on this
 *   loopback, so `--verify-boot` and `vmctl ssh` work); migration-drill on the rig's
 *   netns host mig1 (qemu+ssh: vmctl reaches the guest through the SSH connection)
 *   migrating to mig2 (qemu+ssh, --direct, --copy-storage all).
 * The labs run in lanes side by side (LANES, 2 cores: at most ~3 TCG vCPUs busy at a
 * time). What the drills leave on the peers on purpose — the restored copy on host1,
 * the migrated guest on mig2, the cattle VM replaced by hand — is removed here, after
 * `lab down`, and then checked gone too.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkLabText, type Localized } from '../../src/core/lab/load.js';
import { ensureRig, ensureRigSshHost, repoRoot, type RigEnv, type RigSshHost } from '../_helpers/rig.js';
import { ensureBuilt, vmctl } from '../_helpers/vmctl.js';

const SHIPPED = ['hypervisor-basics', 'emulation-vs-virtio', 'snapshot-dr', 'two-tier', 'migration-drill', 'pets-vs-cattle'] as const;
const LANES = Number(process.env.VMCTL_LABS_LANES ?? 2);
const PREFIX = `ls${process.pid.toString(36).slice(-3)}`;

const virsh = (uri: string, ...args: string[]) => execFileSync('virsh', ['-q', '-c', uri, ...args], { encoding: 'utf8' });
const names = (s: string) => s.split('\n').map((l) => l.trim()).filter(Boolean);

/** domains and networks of lab `lab` (prefix PREFIX) on a host */
function leftovers(uri: string, lab: string): string[] {
  const id = `${PREFIX}-${lab}`;
  return [
    ...names(virsh(uri, 'list', '--all', '--name')).filter((d) => d.startsWith(`${id}-`)).map((d) => `domain ${d}`),
    ...names(virsh(uri, 'net-list', '--all', '--name')).filter((n) => n.startsWith(`vmctl-${id}-`)).map((n) => `network ${n}`),
  ];
}

function bothLanguages(t: Localized | undefined, where: string): string[] {
  if (t === undefined) return [`${where}: missing`];
  if (typeof t === 'string') return [`${where}: one language only`];
  return ['en', 'ko'].filter((l) => !(t[l] ?? '').trim()).map((l) => `${where}: no '${l}' text`);
}

/** at most `n` of the drills at a time */
function lanes(n: number) {
  let free = n;
  const waiting: (() => void)[] = [];
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (free === 0) await new Promise<void>((r) => waiting.push(r));
    else free--;
    try {
      return await fn();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else free++;
    }
  };
}
const lane = lanes(LANES);

describe('shipped labs: files', () => {
  it.each(SHIPPED)('%s validates, has English and Korean texts, checks for every exercise, a solution where the checks need one', (name) => {
    const file = join(repoRoot, 'vm-templates', 'labs', `${name}.yaml`);
    const r = checkLabText(readFileSync(file, 'utf8'), file);
    if (!r.ok) throw new Error(r.problems.map((p) => `${p.path}: ${p.message}`).join('\n'));
    const spec = r.spec;
    expect(spec.name).toBe(name);
    expect(spec.name.length).toBeLessThanOrEqual(20);
    const problems = [...bothLanguages(spec.title, 'title'), ...bothLanguages(spec.description, 'description')];
    for (const ex of spec.exercises) {
      problems.push(...bothLanguages(ex.title, `${ex.id}.title`), ...bothLanguages(ex.instructions, `${ex.id}.instructions`));
      if (ex.checks.length === 0) problems.push(`${ex.id}: no checks`);
      for (const c of ex.checks) problems.push(...bothLanguages(c.name, `${ex.id}.check.name`), ...bothLanguages(c.hint, `${ex.id}.check '${typeof c.name === 'string' ? c.name : c.name.en}'.hint`));
    }
    expect(problems).toEqual([]);
    expect(spec.exercises.filter((e) => e.solution.length > 0).length).toBeGreaterThan(0);
    // small under TCG: ≤ 2 VMs, 384 MiB each, 1 vCPU, no packages from the network
    expect(spec.vms.reduce((a, v) => a + v.count, 0)).toBeLessThanOrEqual(2);
    for (const v of spec.vms) {
      expect(v.memory).toBe('384MiB');
      expect(v.cpus ?? 1).toBe(1);
      expect(v.cloudInit.packages).toEqual([]);
    }
  });

  it('vmctl lab validate accepts each by name and lab available lists all six', { timeout: 60_000 }, async () => {
    for (const name of SHIPPED) {
      const r = await vmctl(['lab', 'validate', name]);
      expect(r.code, r.stderr).toBe(0);
    }
    const a = await vmctl(['lab', 'available']);
    expect(a.code, a.stderr).toBe(0);
    for (const name of SHIPPED) expect(a.stdout).toContain(name);
  });
});

interface CheckJson {
  passed: number;
  failed: number;
  results: { exercise: string; check: string; passed: boolean; output?: string; notRun?: string }[];
}

describe.concurrent('shipped labs: up → check fails → solve → check passes → down (TCG)', () => {
  let env: NodeJS.ProcessEnv;
  let work: string;
  let rig: RigEnv;
  let mig1: RigSshHost;
  let mig2: RigSshHost;
  const LOCAL = 'qemu:///system';

  beforeAll(async () => {
    ensureBuilt();
    rig = await ensureRig();
    mig1 = (await ensureRigSshHost('mig1')).host;
    mig2 = (await ensureRigSshHost('mig2')).host;
    work = mkdtempSync(join(tmpdir(), 'vmctl-labs-shipped-'));
    // HOME: where snapshot-dr keeps its backup set (~/vmctl-lab-backups/LAB)
    env = { VMCTL_CACHE_DIR: join(repoRoot, '.cache'), VMCTL_DATA_DIR: join(work, 'data'), HOME: work, LIBVIRT_DEFAULT_URI: LOCAL };
    for (const [uri, lab] of [
      [LOCAL, 'hypervisor-basics'],
      [LOCAL, 'emulation-vs-virtio'],
      [LOCAL, 'snapshot-dr'],
      [LOCAL, 'two-tier'],
      [LOCAL, 'pets-vs-cattle'],
      [rig.unixUri, 'snapshot-dr'],
      [mig1.unixUri, 'migration-drill'],
      [mig2.unixUri, 'migration-drill'],
    ] as const) {
      const left = leftovers(uri, lab);
      if (left.length) throw new Error(`left from an earlier run on ${uri}: ${left.join(', ')}`);
    }
  }, 300_000);

  afterAll(async () => {
    if (!env) return;
    // best effort: whatever a failed drill left
    for (const lab of SHIPPED) {
      const uri = lab === 'migration-drill' ? mig1.sshUri : LOCAL;
      await vmctl(['-c', uri, 'lab', 'down', lab, '--prefix', PREFIX], { env, timeoutMs: 300_000 });
    }
    await vmctl(['-c', rig.unixUri, 'delete', `${PREFIX}-snapshot-dr-app`], { env });
    await vmctl(['-c', mig2.sshUri, 'delete', `${PREFIX}-migration-drill-counter`], { env });
    await vmctl(['-c', LOCAL, 'delete', `${PREFIX}-pets-vs-cattle-cattle`], { env });
    rmSync(work, { recursive: true, force: true });
  }, 600_000);

  async function drill(
    lab: (typeof SHIPPED)[number],
    o: { uri: string; peers?: Record<string, string>; afterSolve?: (run: (args: string[]) => ReturnType<typeof vmctl>) => Promise<void>; afterDown?: () => Promise<void>; hosts?: string[] },
  ): Promise<void> {
    const t = { start: Date.now(), marks: [] as string[] };
    const mark = (what: string) => {
      t.marks.push(`${what} ${((Date.now() - t.start) / 1000).toFixed(0)} s`);
    };
    const run = (args: string[], timeoutMs = 30 * 60_000) => vmctl(['-c', o.uri, 'lab', ...args, lab, '--prefix', PREFIX], { env, timeoutMs });
    const check = async () => {
      const r = await vmctl(['-c', o.uri, 'lab', 'check', lab, '--prefix', PREFIX, '--json'], { env, timeoutMs: 15 * 60_000 });
      let parsed: CheckJson | undefined;
      try {
        parsed = JSON.parse(r.stdout) as CheckJson;
      } catch {
        /* reported below */
      }
      return { ...r, parsed };
    };
    const report = (c: { parsed?: CheckJson; stderr: string }) =>
      c.parsed ? c.parsed.results.filter((x) => !x.passed).map((x) => `${x.exercise}: ${x.check}: ${x.notRun ?? x.output?.trim().slice(-300)}`).join('\n') : c.stderr;

    const peers = Object.entries(o.peers ?? {}).flatMap(([k, v]) => ['--peer', `${k}=${v}`]);
    const up = await run(['up', ...peers]);
    expect(up.code, up.stderr).toBe(0);
    mark('up');

    const before = await check();
    expect(before.parsed, before.stderr).toBeDefined();
    expect(before.code, 'lab check must fail before the solution').toBeGreaterThan(0);
    expect(before.parsed!.failed).toBeGreaterThan(0);
    mark(`check (${before.parsed!.failed} failing)`);

    const solve = await run(['solve']);
    expect(solve.code, solve.stderr + solve.stdout).toBe(0);
    mark('solve');

    const after = await check();
    expect(after.parsed, after.stderr).toBeDefined();
    expect(report(after)).toBe('');
    expect(after.code).toBe(0);
    mark(`check (${after.parsed!.passed} passing)`);
    if (o.afterSolve) await o.afterSolve(run);

    const down = await run(['down']);
    expect(down.code, down.stderr).toBe(0);
    if (o.afterDown) await o.afterDown();
    mark('down');
    for (const h of o.hosts ?? [LOCAL]) expect(leftovers(h, lab)).toEqual([]);
    process.stderr.write(`[labs-shipped] ${lab}: ${t.marks.join(', ')}\n`);
  }

  it('hypervisor-basics', { timeout: 30 * 60_000 }, () => lane(() => drill('hypervisor-basics', { uri: LOCAL })));

  it('two-tier', { timeout: 30 * 60_000 }, () => lane(() => drill('two-tier', { uri: LOCAL })));

  it('emulation-vs-virtio', { timeout: 30 * 60_000 }, () => lane(() => drill('emulation-vs-virtio', { uri: LOCAL })));

  it('snapshot-dr (restored on rig host1)', { timeout: 40 * 60_000 }, () =>
    lane(() =>
      drill('snapshot-dr', {
        uri: LOCAL,
        peers: { second: rig.unixUri },
        // the restored copy keeps the VM's UUID: lab down finds it on the peer and removes it (checked on both hosts)
        hosts: [LOCAL, rig.unixUri],
      }),
    ),
  );

  it('migration-drill (rig mig1 → mig2, qemu+ssh, --direct)', { timeout: 40 * 60_000 }, () =>
    lane(() => {
      const volumes = (uri: string) => {
        try {
          return names(virsh(uri, 'vol-list', '--pool', 'vmctl')).map((l) => l.split(/\s+/)[0]!).sort();
        } catch {
          return []; // no vmctl pool there yet (a fresh rig host)
        }
      };
      // mig1 keeps the base image lab up put there (the lab's image, not the VM's): only the VM's volumes count there
      const vmVolumes = () => ({ mig1: volumes(mig1.unixUri).filter((v) => !v.startsWith('img_')), mig2: volumes(mig2.unixUri) });
      const before = vmVolumes();
      return drill('migration-drill', {
        uri: mig1.sshUri,
        peers: { target: mig2.sshUri },
        // the migrated guest keeps its UUID: lab down finds it on the peer and removes it (checked on both hosts)
        hosts: [mig1.unixUri, mig2.unixUri],
        afterSolve: async (run) => {
          // lab status finds the migrated guest on the peer, by its UUID
          const st = await run(['status', '--json']);
          expect(st.code, st.stderr).toBe(0);
          expect((JSON.parse(st.stdout) as { vmStates: { key: string; state: string; peer?: string }[] }).vmStates).toEqual([expect.objectContaining({ key: 'counter', state: 'running', peer: 'target' })]);
        },
        afterDown: () => {
          // migrate --copy-storage removed the source's copies of the moved disk and seed (the guest
          // lives on exactly one host); the image's kernel/initrd went to mig2 as the VM's own volumes,
          // which lab down removed with it: both pools are as they were before the lab
          expect(vmVolumes()).toEqual(before);
          return Promise.resolve();
        },
      });
    }),
  );

  it('pets-vs-cattle', { timeout: 40 * 60_000 }, () =>
    lane(() =>
      drill('pets-vs-cattle', {
        uri: LOCAL,
      }),
    ),
  );
});
