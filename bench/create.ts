/**
 * npm run bench:create [-- --rounds 3 --skip-ready]
 *
 * (a) command start → domain running: `vmctl create --wait none` against
 *     `virt-install --import --noautoconsole` doing the same work (a qcow2
 *     overlay of the same base image, same vCPUs/memory/kernel, a cloud-init
 *     seed), medians of alternating rounds. Target: ratio <= 0.5.
 * (b) readiness phases of `vmctl create --wait ssh` next to a hand-written-XML
 *     baseline booting the same image with the same seed: the baseline is
 *     timed with the plainest probes (virsh domifaddr --source agent polling,
 *     a TCP connect + banner on the forwarded port, `cloud-init status --wait`
 *     over ssh), so the gap is vmctl's own overhead.
 * Runs on qemu:///system under TCG, with vmctl's default image.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { median, sleep, virsh } from './util.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, 'skip-ready': { type: 'boolean', default: false } } });
const rounds = Number(values.rounds);
const repo = fileURLToPath(new URL('..', import.meta.url));
const vmctlBin = join(repo, 'bin', 'vmctl.js');
const env = { ...process.env, VMCTL_CACHE_DIR: process.env.VMCTL_CACHE_DIR ?? join(repo, '.cache'), LIBVIRT_DEFAULT_URI: 'qemu:///system' };


function run(cmd: string, args: string[]): Promise<{ ms: number; code: number; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('error', reject);
    c.on('close', (code) => resolve({ ms: performance.now() - t0, code: code ?? 1, out, err }));
  });
}

function must(r: { code: number; err: string }, what: string): void {
  if (r.code !== 0) throw new Error(`${what} failed: ${r.err.trim().split('\n').slice(-3).join(' / ')}`);
}

/** virt-install's domain: its own overlay and seed go with it (--remove-all-storage) */
function cleanupDomain(name: string): void {
  if (!virsh('list', '--all', '--name').split('\n').includes(name)) return;
  try {
    virsh('destroy', name);
  } catch {
    /* not running */
  }
  try {
    virsh('undefine', name, '--remove-all-storage', '--nvram');
  } catch {
    /* not defined */
  }
}

interface ImageFacts {
  path: string;
  kernel: string;
  initrd: string;
  cmdline: string;
}

async function imageFacts(): Promise<ImageFacts> {
  const r = await run(process.execPath, [vmctlBin, 'image', 'list', '--json']);
  must(r, 'vmctl image list');
  const list = JSON.parse(r.out) as { name: string; path: string; boot: { method: string; kernelPath: string; initrdPath: string; cmdline: string } }[];
  const img = list.find((i) => i.name === 'debian-12');
  if (!img || img.boot.method !== 'direct-kernel') throw new Error('the debian-12 image is not in the pool: run vmctl image build debian-12 first');
  return { path: img.path, kernel: img.boot.kernelPath, initrd: img.boot.initrdPath, cmdline: img.boot.cmdline };
}

async function measureCreate(img: ImageFacts, work: string): Promise<void> {
  const userData = join(work, 'user-data');
  const pub = execFileSync('sh', ['-c', `ssh-keygen -q -t ed25519 -N '' -f ${join(work, 'k')} && cat ${join(work, 'k')}.pub`], { encoding: 'utf8' }).trim();
  writeFileSync(userData, `#cloud-config\nusers:\n  - name: vmctl\n    ssh_authorized_keys: ["${pub}"]\n`);
  const v: number[] = [];
  const vi: number[] = [];
  for (let i = 0; i < rounds; i++) {
    await vmctlCleanup('bench-v');
    const a = await run(process.execPath, [vmctlBin, 'create', 'bench-v', '--wait', 'none', '--accel', 'tcg']);
    must(a, 'vmctl create');
    if (virsh('domstate', 'bench-v').trim() !== 'running') throw new Error('vmctl: bench-v not running');
    v.push(a.ms);
    must(await run(process.execPath, [vmctlBin, 'delete', 'bench-v']), 'vmctl delete');

    cleanupDomain('bench-vi');
    const b = await run('virt-install', [
      '--connect', 'qemu:///system', '--name', 'bench-vi', '--virt-type', 'qemu', '--memory', '512', '--vcpus', '1',
      '--import', '--disk', `size=4,pool=vmctl,format=qcow2,backing_store=${img.path},backing_format=qcow2`,
      '--boot', `kernel=${img.kernel},initrd=${img.initrd},kernel_args=${img.cmdline}`,
      '--cloud-init', `user-data=${userData}`, '--network', 'none', '--graphics', 'none',
      '--osinfo', 'detect=on,require=off', '--noautoconsole',
    ]);
    must(b, 'virt-install');
    if (virsh('domstate', 'bench-vi').trim() !== 'running') throw new Error('virt-install: bench-vi not running');
    vi.push(b.ms);
    cleanupDomain('bench-vi');
  }
  // the floor for any client written in Node: libvirt starting an already-defined domain
  // of the same shape (timed as `virsh start`, whose own start-up is ~10 ms) plus Node's
  // bare start-up (`node -e 0`); vmctl also has to connect, make the overlay and seed and define
  const starts: number[] = [];
  const nodes: number[] = [];
  await vmctlCleanup('bench-f');
  must(await run(process.execPath, [vmctlBin, 'create', 'bench-f', '--no-start', '--accel', 'tcg']), 'vmctl create --no-start');
  try {
    for (let i = 0; i < rounds; i++) {
      const st = await run('virsh', ['-c', 'qemu:///system', 'start', 'bench-f']);
      must(st, 'virsh start');
      starts.push(st.ms);
      virsh('destroy', 'bench-f');
      const n = await run(process.execPath, ['-e', '0']);
      must(n, 'node -e 0');
      nodes.push(n.ms);
    }
  } finally {
    await vmctlCleanup('bench-f');
  }
  const floor = median(starts) + median(nodes);
  const ratio = median(v) / median(vi);
  console.log('\n(a) command start → domain running (TCG, same image, overlay + cloud-init seed)');
  console.log('| tool | median ms | runs (ms) |');
  console.log('|------|-----------|-----------|');
  console.log(`| vmctl create --wait none | ${Math.round(median(v))} | ${v.map(Math.round).join(', ')} |`);
  console.log(`| virt-install --import --noautoconsole | ${Math.round(median(vi))} | ${vi.map(Math.round).join(', ')} |`);
  console.log(`| floor: virsh start of the defined domain + node -e 0 | ${Math.round(floor)} | start ${starts.map(Math.round).join(', ')}; node ${nodes.map(Math.round).join(', ')} |`);
  console.log(`ratio vmctl / virt-install: ${ratio.toFixed(2)}x (target <= 0.50x)`);
  console.log(`floor / virt-install: ${(floor / median(vi)).toFixed(2)}x — no Node client that still has to connect, make the disk and seed and define can go below this`);
}

async function waitBanner(port: number, deadline: number): Promise<void> {
  while (performance.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.setTimeout(3000);
      s.once('data', (d) => {
        s.destroy();
        resolve(d.toString().startsWith('SSH-'));
      });
      s.once('error', () => resolve(false));
      // QEMU's user-mode forward accepts at once and closes when the guest does not listen yet
      s.once('close', () => resolve(false));
      s.once('timeout', () => {
        s.destroy();
        resolve(false);
      });
    });
    if (ok) return;
    await sleep(500);
  }
  throw new Error('baseline: sshd never answered');
}

async function measureReady(): Promise<void> {
  await vmctlCleanup('bench-r');
  const r = await run(process.execPath, [vmctlBin, 'create', 'bench-r', '--wait', 'ssh', '--accel', 'tcg', '--json']);
  must(r, 'vmctl create --wait ssh');
  const res = JSON.parse(r.out) as { phases: { phase: string; atMs: number }[] };
  const mine = Object.fromEntries(res.phases.map((p) => [p.phase, p.atMs]));
  must(await run(process.execPath, [vmctlBin, 'delete', 'bench-r']), 'vmctl delete');

  // baseline: the same definition (same image, overlay, seed and forward), started
  // with plain `virsh start` and watched with the plainest probes
  must(await run(process.execPath, [vmctlBin, 'create', 'bench-r', '--no-start', '--accel', 'tcg']), 'vmctl create --no-start');
  const xml = virsh('dumpxml', 'bench-r', '--inactive');
  const port = Number(/hostfwd=tcp:127\.0\.0\.1:(\d+)-:22/.exec(xml)?.[1]);
  const t0 = performance.now();
  virsh('start', 'bench-r');
  const started = performance.now() - t0;
  const deadline = t0 + 15 * 60_000;
  let ip = 0;
  while (!ip && performance.now() < deadline) {
    try {
      if (/ipv4/.test(virsh('domifaddr', 'bench-r', '--source', 'agent'))) ip = performance.now() - t0;
    } catch {
      /* agent not up yet */
    }
    if (!ip) await sleep(1000);
  }
  await waitBanner(port, deadline);
  const sshd = performance.now() - t0;
  const dataDir = process.env.VMCTL_DATA_DIR ?? join(process.env.HOME ?? '/root', '.local/share/vmctl');
  const idFile = execFileSync('sh', ['-c', `ls ${dataDir}/vms/*/bench-r/id_ed25519 | head -1`], { encoding: 'utf8' }).trim();
  execFileSync('ssh', ['-i', idFile, '-p', String(port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', 'vmctl@127.0.0.1', 'cloud-init status --wait >/dev/null']);
  const ci = performance.now() - t0;
  must(await run(process.execPath, [vmctlBin, 'delete', 'bench-r']), 'vmctl delete');
  const rows: [string, number | undefined, number][] = [
    ['started', mine.started, started],
    ['ip', mine.ip, ip],
    ['sshd', mine.sshd, sshd],
    ['cloud-init', mine['cloud-init'], ci],
  ];
  console.log('\n(b) readiness phases, ms after the start command (vmctl: `vmctl create --wait ssh`; baseline: `virsh start` of the same definition)');
  console.log('| phase | vmctl create --wait ssh | baseline (virsh + plain probes) | ratio |');
  console.log('|-------|-------------------------|---------------------------------|-------|');
  for (const [p, a, b] of rows) console.log(`| ${p} | ${a ?? '-'} | ${Math.round(b)} | ${a !== undefined && b > 0 ? (a / b).toFixed(2) + 'x' : '-'} |`);
}

async function vmctlCleanup(name: string): Promise<void> {
  if (virsh('list', '--all', '--name').split('\n').includes(name)) await run(process.execPath, [vmctlBin, 'delete', name]);
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'vmctl-bench-'));
  try {
    const img = await imageFacts();
    await measureCreate(img, work);
    if (!values['skip-ready']) await measureReady();
  } finally {
    await vmctlCleanup('bench-v');
    await vmctlCleanup('bench-f');
    await vmctlCleanup('bench-r');
    cleanupDomain('bench-vi');
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
