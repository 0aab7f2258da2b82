/**
 * The migration tests' guest: the tiny busybox guest (rig.tinyKernel/initrd) with its serial
 * console logged to a file on storage every rig host sees (append: each host's QEMU continues
 * it), and typed into through libvirt's console stream. `startCounter` makes it count once a
 * second on the console (`CNT i boot_id uptime`) and into /tmp/count (guest memory);
 * `startDirtying` makes it rewrite N MiB of random data in a loop (a guest dirtying memory
 * faster than a limited link).
 */
import { chmodSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { XMLBuilder, XMLParser } from 'fast-xml-parser';
import { Connection } from '../../src/libvirt/connection.js';
import { tinyDomainXml } from './tiny-domain.js';
import { waitForFileContains, type RigEnv } from './rig.js';

const opts = { ignoreAttributes: false, attributeNamePrefix: '@_' };

export interface GuestDiskSpec {
  path: string;
  format: 'qcow2' | 'raw';
}

export function countingGuestXml(rig: RigEnv, o: { name: string; serialLog: string; memoryMiB?: number; disk?: GuestDiskSpec }): string {
  const doc = new XMLParser(opts).parse(
    tinyDomainXml({ name: o.name, kernel: rig.tinyKernel, initrd: rig.tinyInitrd, cmdline: rig.tinyCmdline, memoryMiB: o.memoryMiB ?? 128 }),
  ) as { domain: { devices: Record<string, unknown> } };
  const dev = doc.domain.devices;
  dev['serial'] = { '@_type': 'pty', log: { '@_file': o.serialLog, '@_append': 'on' }, target: { '@_port': 0 } };
  if (o.disk) {
    dev['disk'] = {
      '@_type': 'file',
      '@_device': 'disk',
      driver: { '@_name': 'qemu', '@_type': o.disk.format, '@_cache': 'none' },
      source: { '@_file': o.disk.path },
      target: { '@_dev': 'vda', '@_bus': 'virtio' },
    };
  }
  return new XMLBuilder({ ...opts, format: true, suppressEmptyNode: true }).build(doc) as string;
}

/** A directory every rig host (and their QEMUs, root or not) can read and write. */
export function sharedDir(base: string, name: string): string {
  const d = join(base, name);
  mkdirSync(d, { recursive: true });
  chmodSync(d, 0o777);
  return d;
}

/** Type `line` into the guest's serial console shell (on whichever host `uri` is). */
export async function typeInto(uri: string, name: string, line: string): Promise<void> {
  const conn = await Connection.open(uri);
  try {
    const dom = await conn.lookupDomain(name);
    const s = await dom.openConsole(null, 1 /* VIR_DOMAIN_CONSOLE_FORCE */);
    const send = (t: string) => new Promise<void>((resolve, reject) => s.write(Buffer.from(t), (e) => (e ? reject(e) : resolve())));
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    // busybox ash's line editor asks for the cursor position (ESC[6n) at each prompt: answer it
    await send('\x1b[1;1R\r');
    await pause(400);
    await send(`${line}\r`);
    await pause(800);
    s.abort?.();
  } finally {
    await conn.close();
  }
}

export const COUNTER =
  'i=0; while :; do i=$((i+1)); echo "CNT $i $(cat /proc/sys/kernel/random/boot_id) $(cut -d" " -f1 /proc/uptime)"; echo $i >> /tmp/count; sleep 1; done &';

export async function startCounter(uri: string, name: string, serialLog: string): Promise<void> {
  await typeInto(uri, name, COUNTER);
  await waitForFileContains(serialLog, 'CNT 2 ', 60_000);
}

/** Fill `mib` MiB of guest memory with random data, and (loop) rewrite it over and over. */
export async function startDirtying(uri: string, name: string, serialLog: string, mib: number, loop = true): Promise<void> {
  const tag = `DIRTY${mib}-READY`;
  await typeInto(uri, name, `dd if=/dev/urandom of=/dev/shm/src bs=1M count=${mib} 2>/dev/null; echo ${tag}${loop ? '; while :; do cp /dev/shm/src /dev/shm/dst; done &' : ''}`);
  await waitForFileContains(serialLog, `${tag}\r`, 120_000).catch(() => waitForFileContains(serialLog, `${tag}\n`, 1000));
}

export interface CounterLine {
  i: number;
  bootId: string;
  uptime: number;
}

export function counterLines(serialLog: string): CounterLine[] {
  const out: CounterLine[] = [];
  for (const m of readFileSync(serialLog, 'utf8').matchAll(/CNT (\d+) ([0-9a-f-]{36}) ([0-9.]+)/g)) out.push({ i: Number(m[1]), bootId: m[2]!, uptime: Number(m[3]) });
  return out;
}

/** Wait until the counter has moved `by` beyond its current last value; returns the lines. */
export async function counterAdvances(serialLog: string, by = 3, timeoutMs = 60_000): Promise<CounterLine[]> {
  const start = counterLines(serialLog).at(-1)?.i ?? 0;
  await waitForFileContains(serialLog, `CNT ${start + by} `, timeoutMs);
  return counterLines(serialLog);
}

/** The counter ran without a gap or a restart: consecutive i, one boot id, uptime never going back. */
export function assertContinuous(lines: CounterLine[]): void {
  if (lines.length < 2) throw new Error(`too few counter lines: ${lines.length}`);
  const boot = lines[0]!.bootId;
  for (let k = 1; k < lines.length; k++) {
    const a = lines[k - 1]!;
    const b = lines[k]!;
    if (b.i !== a.i + 1) throw new Error(`counter jumped from ${a.i} to ${b.i}`);
    if (b.bootId !== boot) throw new Error(`boot id changed at ${b.i}: ${boot} → ${b.bootId}`);
    if (b.uptime < a.uptime) throw new Error(`uptime went back at ${b.i}: ${a.uptime} → ${b.uptime}`);
  }
}

/** Print the guest's /tmp/count summary on the console: FILE <lines> <last> <sum check>. */
export async function checkCountFile(uri: string, name: string, serialLog: string): Promise<{ lines: number; last: number; sequential: boolean }> {
  const tag = `FILE${Date.now() % 100000}`;
  await typeInto(uri, name, `echo "${tag} $(wc -l < /tmp/count) $(tail -n1 /tmp/count) $(awk 'NR!=$1{bad=1} END{print bad?"gap":"ok"}' /tmp/count)"`);
  const re = new RegExp(`${tag} (\\d+) (\\d+) (ok|gap)`);
  const deadline = Date.now() + 30_000;
  let m: RegExpExecArray | null = null;
  while (!(m = re.exec(readFileSync(serialLog, 'utf8')))) {
    if (Date.now() > deadline) throw new Error(`no ${tag} line in ${serialLog}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return { lines: Number(m[1]), last: Number(m[2]), sequential: m[3] === 'ok' };
}
