/**
 * npm run bench:boot [-- --rounds 3 --tuned debian-12 --stock debian-12-stock]
 *
 * Time from `started` to sshd and to cloud-init done (vmctl create's own
 * phases, `--json`), for the default (tuned) image and the stock baseline
 * (`vmctl image build debian-12 --profile stock`), each created --rounds times,
 * alternating, one guest at a time, under TCG (default template: 2 vCPUs). The
 * ratio tuned/stock is what the numbers mean on a noisy machine (target ≤ 0.35×).
 * --cpus N / --stock-cpus N override the template's vCPU count (the default template has 2;
 * --stock-cpus 1 is the stock image on the old 1-vCPU default).
 * The floor, measured in the same run: the tiny busybox guest
 * (scripts/build-tiny-guest.sh) from `virsh start` to its ready marker on the
 * serial console. Every VM is named tboot-bench-… and deleted afterwards.
 * --analyze prints the guest's own breakdown of each image's first boot
 * (systemd-analyze, critical chain of sshd, cloud-init analyze) on stderr.
 */
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { median, sleep, virsh } from './util.js';
import { tinyDomainXml } from '../test/_helpers/tiny-domain.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    tuned: { type: 'string', default: 'debian-12' },
    stock: { type: 'string', default: 'debian-12-stock' },
    'tiny-dir': { type: 'string' },
    // print the guest's own view of the first boot of each image (systemd-analyze, cloud-init analyze)
    analyze: { type: 'boolean', default: false },
    // vCPUs (default: the default template's); --stock-cpus 1 measures the stock image the way
    // the default template was before it went to 2 vCPUs
    cpus: { type: 'string' },
    'stock-cpus': { type: 'string' },
  },
});
const rounds = Number(values.rounds);
const repo = fileURLToPath(new URL('..', import.meta.url));
const vmctlBin = join(repo, 'bin', 'vmctl.js');
const cache = process.env.VMCTL_CACHE_DIR ?? join(repo, '.cache');
const env = { ...process.env, VMCTL_CACHE_DIR: cache, LIBVIRT_DEFAULT_URI: 'qemu:///system' };
const tinySrc = values['tiny-dir'] ?? process.env.VMCTL_TINY_DIR ?? join(repo, '.cache', 'tiny');

const s1 = (ms: number) => (ms / 1000).toFixed(1);

function vmctl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [vmctlBin, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('error', reject);
    c.on('close', (code) => resolve({ code: code ?? 1, out, err }));
  });
}

interface Boot {
  sshd: number;
  cloudInit: number;
}

const ANALYZE = [
  'systemd-analyze',
  'systemd-analyze critical-chain ssh.service',
  'sudo -n cloud-init analyze show | grep -E "^Finished|^Total"',
  'sudo -n dmesg | grep -E "Trying to unpack|Freeing unused kernel image .initmem|Run /init|EXT4-fs .vda.*mounted|systemd 252"',
  'systemctl show -p ActiveEnterTimestampMonotonic ssh.service vmctl-seed-early.service vmctl-cloud-init.service cloud-final.service',
].join('; echo; ');

/** vmctl create → phases relative to `started`; the VM is deleted afterwards. */
async function bootOnce(image: string, name: string, cpus: string | undefined, analyze = false): Promise<Boot> {
  try {
    const r = await vmctl(['create', name, '--image', image, '--accel', 'tcg', ...(cpus ? ['--cpus', cpus] : []), '--json', '--progress', 'none', '--timeout', '900']);
    if (r.code !== 0) throw new Error(`vmctl create ${name} failed: ${r.err.trim().split('\n').slice(-3).join(' / ')}`);
    const res = JSON.parse(r.out) as { phases: { phase: string; atMs: number }[] };
    const at = (p: string) => {
      const ph = res.phases.find((x) => x.phase === p);
      if (!ph) throw new Error(`${name}: no ${p} phase`);
      return ph.atMs;
    };
    if (analyze) {
      const a = await vmctl(['ssh', name, '--', ANALYZE]);
      process.stderr.write(`[bench:boot] ${name} (${image}) as the guest saw it:\n${a.out}${a.err}\n`);
    }
    return { sshd: at('sshd') - at('started'), cloudInit: at('cloud-init') - at('started') };
  } finally {
    await vmctl(['delete', name, '--progress', 'none']);
  }
}

/** The tiny busybox guest: virsh start → ready marker on the serial console. */
async function tinyOnce(dir: string, marker: string, round: number): Promise<number> {
  const name = `tboot-bench-tiny-${process.pid}-${round}`;
  const log = join(dir, `${name}.log`);
  rmSync(log, { force: true });
  const xml = join(dir, `${name}.xml`);
  writeFileSync(xml, tinyDomainXml({ name, kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), serialLog: log }), { mode: 0o600 });
  virsh('define', xml);
  try {
    const t0 = performance.now();
    virsh('start', name);
    const tStart = performance.now() - t0;
    for (;;) {
      if (existsSync(log) && readFileSync(log, 'utf8').includes(marker)) return performance.now() - t0 - tStart;
      if (performance.now() - t0 > 120_000) throw new Error(`${name}: no ${marker} within 120 s`);
      await sleep(50);
    }
  } finally {
    try {
      virsh('destroy', name);
    } catch {
      /* already off */
    }
    virsh('undefine', name);
    rmSync(xml, { force: true });
    rmSync(log, { force: true });
  }
}

async function main(): Promise<void> {
  // the tiny guest's files, copied (libvirt relabels kernel/initrd for the QEMU user: never the shared ones)
  const tinyManifest = JSON.parse(readFileSync(join(tinySrc, 'manifest.json'), 'utf8')) as { readyMarker: string };
  // (in a directory the QEMU user can enter: the cache is owner-only; a public kernel, no secrets)
  const tinyDir = mkdtempSync(join(tmpdir(), 'vmctl-bench-tiny-'));
  chmodSync(tinyDir, 0o755);
  for (const f of ['vmlinuz', 'initrd.img']) copyFileSync(join(tinySrc, f), join(tinyDir, f));
  try {
    await runRounds(tinyDir, tinyManifest.readyMarker);
  } finally {
    rmSync(tinyDir, { recursive: true, force: true });
  }
}

async function runRounds(tinyDir: string, readyMarker: string): Promise<void> {
  const loadBefore = loadavg().map((x) => x.toFixed(1)).join(' ');
  const runs: Record<'tuned' | 'stock', Boot[]> = { tuned: [], stock: [] };
  const tiny: number[] = [];
  const ratios: { sshd: number[]; cloudInit: number[] } = { sshd: [], cloudInit: [] };
  for (let r = 0; r < rounds; r++) {
    tiny.push(await tinyOnce(tinyDir, readyMarker, r));
    const order: ('tuned' | 'stock')[] = r % 2 === 0 ? ['tuned', 'stock'] : ['stock', 'tuned'];
    const got: Partial<Record<'tuned' | 'stock', Boot>> = {};
    for (const which of order) {
      const b = await bootOnce(
        which === 'tuned' ? values.tuned! : values.stock!,
        `tboot-bench-${which}-${process.pid}-${r}`,
        which === 'tuned' ? values.cpus : (values['stock-cpus'] ?? values.cpus),
        values.analyze && r < 2,
      );
      got[which] = b;
      runs[which].push(b);
      process.stderr.write(`[bench:boot] round ${r + 1}/${rounds} ${which}: sshd ${s1(b.sshd)} s, cloud-init ${s1(b.cloudInit)} s (tiny ${s1(tiny.at(-1)!)} s, load ${loadavg()[0]!.toFixed(1)})\n`);
    }
    ratios.sshd.push(got.tuned!.sshd / got.stock!.sshd);
    ratios.cloudInit.push(got.tuned!.cloudInit / got.stock!.cloudInit);
  }

  const row = (label: string, xs: number[]) => `| ${label} | ${s1(median(xs))} | ${xs.map(s1).join(', ')} |`;
  const lines = [
    `rounds: ${rounds}, TCG, default template, vCPUs: tuned ${values.cpus ?? 'template default'}, stock ${values['stock-cpus'] ?? values.cpus ?? 'template default'}; load average ${loadBefore} before, ${loadavg().map((x) => x.toFixed(1)).join(' ')} after; seconds after \`started\` (medians; runs in order)`,
    '',
    '| measurement | median s | runs (s) |',
    '|---|---|---|',
    row(`tuned (${values.tuned}) → sshd`, runs.tuned.map((b) => b.sshd)),
    row(`stock (${values.stock}) → sshd`, runs.stock.map((b) => b.sshd)),
    row(`tuned → cloud-init done`, runs.tuned.map((b) => b.cloudInit)),
    row(`stock → cloud-init done`, runs.stock.map((b) => b.cloudInit)),
    row('floor: tiny guest → init', tiny),
    '',
    `ratio tuned/stock, sshd: ${median(ratios.sshd).toFixed(2)}x (per round ${ratios.sshd.map((x) => x.toFixed(2)).join(', ')}; target <= 0.35x)`,
    `ratio tuned/stock, cloud-init done: ${median(ratios.cloudInit).toFixed(2)}x (per round ${ratios.cloudInit.map((x) => x.toFixed(2)).join(', ')})`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:boot: ${(err as Error).message}\n`);
  process.exit(1);
});
