/**
 * The migration tests' setting: the rig's netns hosts mig1 and mig2, a work dir both see
 * (serial logs, shared disks), guests defined through their unix sockets, and vmctl run either
 * inside mig1's network namespace (peer-to-peer over qemu+tcp to 10.254.0.12, as a user on mig1
 * would) or in the root netns over the hosts' qemu+ssh URIs (--direct).
 * Works with the normal rig (scripts/test.sh) and inside scripts/rig-sandbox.sh.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureRig, repoRoot, rigSshHost, type RigEnv, type RigSshHost } from './rig.js';
import { ensureBuilt } from './vmctl.js';
import { countingGuestXml, sharedDir, type GuestDiskSpec } from './migrate-guest.js';

export interface MigRig {
  rig: RigEnv;
  mig1: RigSshHost;
  mig2: RigSshHost;
  work: string;
  dataDir: string;
  /** mig2 as mig1's libvirtd reaches it (rig network) */
  mig2Tcp: string;
  mig1Tcp: string;
}

export function run(cmd: string, args: string[], timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd: repoRoot, timeout: timeoutMs, encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message.split('\n')[0]}\n${String(stderr).trim()}`));
      else resolve(String(stdout));
    });
  });
}

export const virsh = (uri: string, ...args: string[]): Promise<string> => run('virsh', ['-q', '-c', uri, ...args]);

export async function migRig(): Promise<MigRig> {
  const rig = await ensureRig();
  ensureBuilt();
  const work = mkdtempSync(join(tmpdir(), 'vmctl-migrate-'));
  sharedDir(work, '.');
  const dataDir = join(work, 'data');
  const mig1 = rigSshHost(rig, 'mig1');
  const mig2 = rigSshHost(rig, 'mig2');
  return { rig, mig1, mig2, work, dataDir, mig1Tcp: `qemu+tcp://${mig1.addr}/system`, mig2Tcp: `qemu+tcp://${mig2.addr}/system` };
}

/** Define and start the counting guest on `host`. */
export async function bootGuest(m: MigRig, host: RigSshHost, name: string, o: { memoryMiB?: number; disk?: GuestDiskSpec } = {}): Promise<string> {
  const serialLog = join(m.work, `${name}.serial.log`);
  const xmlPath = join(m.work, `${name}.xml`);
  writeFileSync(xmlPath, countingGuestXml(m.rig, { name, serialLog, ...o }));
  await virsh(host.unixUri, 'define', xmlPath);
  await virsh(host.unixUri, 'start', name);
  return serialLog;
}

/**
 * vmctl's `vmctl` pool (/var/lib/vmctl/images, private to each rig host) on a rig host, defined and
 * started if a test comes before anything vmctl made there (as on a fresh rig). Left in place: it is
 * the pool vmctl itself would make, and another test file may be using it.
 */
export async function ensureVmctlPool(uri: string): Promise<void> {
  const ok = () => virsh(uri, 'pool-info', 'vmctl').then((t) => /State:\s+running/.test(t), () => false);
  if (await ok()) return;
  await virsh(uri, 'pool-define-as', 'vmctl', 'dir', '--target', '/var/lib/vmctl/images').catch(() => undefined);
  await virsh(uri, 'pool-build', 'vmctl').catch(() => undefined);
  await virsh(uri, 'pool-start', 'vmctl').catch(() => undefined);
  await virsh(uri, 'pool-autostart', 'vmctl').catch(() => undefined);
  if (!(await ok())) throw new Error(`rig host ${uri}: cannot make the vmctl pool (virsh pool-info vmctl)`);
}

/** Where the guest is: per host 'running' | 'shut off' | … or 'none'. */
export async function whereIs(m: MigRig, name: string): Promise<{ mig1: string; mig2: string }> {
  const st = (h: RigSshHost) => virsh(h.unixUri, 'domstate', name).then((s) => s.trim(), () => 'none');
  return { mig1: await st(m.mig1), mig2: await st(m.mig2) };
}

export async function removeGuest(m: MigRig, name: string): Promise<void> {
  for (const h of [m.mig1, m.mig2]) {
    await virsh(h.unixUri, 'destroy', name).catch(() => undefined);
    await virsh(h.unixUri, 'undefine', name, '--snapshots-metadata').catch(() => undefined);
  }
}

export async function cleanupMigRig(m: MigRig | undefined, names: string[]): Promise<void> {
  if (!m) return;
  for (const n of names) await removeGuest(m, n);
  rmSync(m.work, { recursive: true, force: true });
}

export interface Running {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  done: Promise<{ code: number; stdout: string; stderr: string }>;
  /** resolves once stderr contains `needle` */
  waitStderr(needle: string, timeoutMs?: number): Promise<void>;
}

/** Start vmctl (inside `netns` when given) with VMCTL_DATA_DIR in the work dir. */
export function startVmctl(m: MigRig, args: string[], o: { netns?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Running {
  const node = [process.execPath, join(repoRoot, 'bin', 'vmctl.js'), ...args];
  const [cmd, ...argv] = o.netns ? ['ip', 'netns', 'exec', o.netns, ...node] : node;
  const child = spawn(cmd!, argv, { env: { ...process.env, VMCTL_DATA_DIR: m.dataDir, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const r: Running = {
    child,
    stdout: '',
    stderr: '',
    done: undefined as never,
    waitStderr: (needle, timeoutMs = 120_000) =>
      new Promise((resolve, reject) => {
        const t0 = Date.now();
        const tick = () => {
          if (r.stderr.includes(needle)) return resolve();
          if (child.exitCode !== null || Date.now() - t0 > timeoutMs) return reject(new Error(`vmctl never printed '${needle}'; stderr:\n${r.stderr}\nstdout:\n${r.stdout}`));
          setTimeout(tick, 100);
        };
        tick();
      }),
  };
  child.stdout!.on('data', (d: Buffer) => (r.stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (r.stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 300_000);
  r.done = new Promise((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal === 'SIGKILL' ? 137 : 128), stdout: r.stdout, stderr: r.stderr });
    }),
  );
  return r;
}

export function vmctlRun(m: MigRig, args: string[], o: { netns?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}) {
  return startVmctl(m, args, o).done;
}

/** p2p from mig1 to mig2 over the rig network, vmctl running on mig1 (its netns). */
export function p2pArgs(m: MigRig, name: string, extra: string[] = []): { args: string[]; netns: string } {
  return { args: ['-c', m.mig1.unixUri, 'migrate', name, '--to', m.mig2Tcp, '--migrate-uri', `tcp://${m.mig2.addr}`, ...extra], netns: m.mig1.netns };
}
