/**
 * npm run bench:rpc [-- --uri qemu:///system --seconds 3 --concurrency 8]
 *
 * vmctl's RPC client against libvirt's own C client (python3-libvirt, the
 * anchor), measured side by side in the same run on the same daemon:
 * connectGetLibVersion and connectListAllDomains calls/s, sequential and with
 * N calls in flight (N threads sharing one connection for the C client).
 * Prints each ratio (vmctl / C client); the target is >= 1.0x in both modes.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
// the compiled library, as the vmctl binary runs it (npm run bench:rpc builds first)
import { Connection } from '../dist/libvirt/connection.js';

const { values } = parseArgs({
  options: {
    uri: { type: 'string', default: 'qemu:///system' },
    seconds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '3' },
  },
});
const uri = values.uri;
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);
const rounds = Number(values.rounds);

type Mode = 'sequential' | 'concurrent';
type Results = Record<string, Record<Mode, number>>;

async function sequential(op: () => Promise<unknown>): Promise<number> {
  let n = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    await op();
    n++;
  }
  return n / ((performance.now() - start) / 1000);
}

async function concurrent(op: () => Promise<unknown>): Promise<number> {
  let n = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  const worker = async () => {
    while (performance.now() < end) {
      await op();
      n++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return n / ((performance.now() - start) / 1000);
}

async function measureVmctl(): Promise<Results> {
  const conn = await Connection.open(uri);
  try {
    const ops: Record<string, () => Promise<unknown>> = {
      getLibVersion: () => conn.remote.connectGetLibVersion(),
      listAllDomains: () => conn.remote.connectListAllDomains({ needResults: 1, flags: 0 }),
    };
    const out: Results = {};
    for (const [name, op] of Object.entries(ops)) {
      await op(); // warm up
      out[name] = { sequential: await sequential(op), concurrent: await concurrent(op) };
    }
    return out;
  } finally {
    await conn.close();
  }
}

function measureCClient(): Results {
  const script = fileURLToPath(new URL('./rpc_c_client.py', import.meta.url));
  // /usr/bin/python3: Debian's interpreter, where python3-libvirt lives (PATH may hold another)
  const out = execFileSync('/usr/bin/python3', [script, uri, String(seconds), String(concurrency)], { encoding: 'utf8' });
  return JSON.parse(out) as Results;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

function median(xs: number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 ? a[m]! : (a[m - 1]! + a[m]!) / 2;
}

async function main(): Promise<void> {
  console.error(`bench:rpc  uri=${uri}  ${seconds}s per cell  concurrency=${concurrency}  rounds=${rounds}`);
  // the two clients alternate, round after round, so both see the same machine;
  // each cell compares the medians over the rounds
  const cRuns: Results[] = [];
  const vRuns: Results[] = [];
  for (let i = 0; i < rounds; i++) {
    cRuns.push(measureCClient());
    vRuns.push(await measureVmctl());
  }
  const rows: string[][] = [];
  let worst = Infinity;
  for (const op of Object.keys(vRuns[0]!)) {
    for (const mode of ['sequential', 'concurrent'] as const) {
      const anchor = median(cRuns.map((r) => r[op]![mode]));
      const mine = median(vRuns.map((r) => r[op]![mode]));
      const ratio = mine / anchor;
      worst = Math.min(worst, ratio);
      rows.push([op, mode === 'concurrent' ? `${concurrency} in flight` : 'sequential', fmt(mine), fmt(anchor), `${ratio.toFixed(2)}x`]);
    }
  }
  const header = ['call', 'mode', 'vmctl calls/s', 'C client calls/s', 'ratio'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |';
  console.log(line(header));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const r of rows) console.log(line(r));
  console.log(`worst ratio: ${worst.toFixed(2)}x (target >= 1.00x; medians of ${rounds} alternating rounds)`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
