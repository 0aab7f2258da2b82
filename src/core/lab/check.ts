/**
 * `vmctl lab check` and `lab solve`: run an exercise's checks (or its solution
 * steps) — in a lab VM over SSH (host key verified as always), or on this
 * machine through /bin/sh — and say per check whether it passed, with the
 * hint when it did not. Host commands of a lab that did not ship with vmctl
 * run only when the lab was brought up with --trust, and only while the file
 * is byte for byte the one that was trusted.
 */
import { spawn } from 'node:child_process';
import { dirname } from 'node:path';
import { VmctlError } from '../errors.js';
import { packagePath } from '../package-root.js';
import type { OpContext } from '../op/context.js';
import type { Connection } from '../../libvirt/connection.js';
import { vmSshTarget } from '../vm/info.js';
import { connectRunningGuest, guestCapture, type GuestConnection } from '../guest/ssh.js';
import { loadLab, localize, type LabExerciseSpec, type LoadedLab } from './load.js';
import { mustReadLabRecord, type LabRecord } from './record.js';

export interface CheckResult {
  exercise: string;
  check: string;
  on: string;
  passed: boolean;
  exit?: number;
  expectedExit: number;
  expectedOutput?: string;
  /** the end of stdout+stderr */
  output?: string;
  hint?: string;
  /** why it did not run */
  notRun?: string;
  ms: number;
}

export interface LabCheckResult {
  id: string;
  lab: string;
  passed: number;
  failed: number;
  results: CheckResult[];
}

const envKey = (s: string) => s.toUpperCase().replace(/[^A-Z0-9]/g, '_');

/** What host commands see. */
export function labEnv(conn: Connection, r: LabRecord): Record<string, string> {
  const env: Record<string, string> = {
    // the vmctl that runs this lab: an executable (its #! finds node on PATH, where this node is first)
    VMCTL: packagePath('bin/vmctl.js'),
    PATH: `${dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    VMCTL_LAB: r.id,
    VMCTL_LAB_NAME: r.lab,
    VMCTL_LAB_PREFIX: r.prefix,
    VMCTL_LAB_URI: conn.uri.original,
  };
  for (const v of r.vms) env[`VMCTL_LAB_VM_${envKey(v.key)}`] = v.name;
  for (const n of r.networks) env[`VMCTL_LAB_NET_${envKey(n.key)}`] = n.name;
  for (const [k, uri] of Object.entries(r.peers)) env[`VMCTL_LAB_PEER_${envKey(k)}`] = uri;
  return env;
}

function runHost(cmd: string, env: Record<string, string>, timeoutMs: number, signal: AbortSignal): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', cmd], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    const add = (d: Buffer) => {
      out += d.toString();
      if (out.length > 65536) out = out.slice(-65536);
    };
    child.stdout.on('data', add);
    child.stderr.on('data', add);
    const kill = () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    };
    const timer = setTimeout(() => {
      kill();
      out += `\n(timed out after ${Math.round(timeoutMs / 1000)} s)`;
    }, timeoutMs);
    const onAbort = () => kill();
    signal.addEventListener('abort', onAbort, { once: true });
    child.on('error', reject);
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      resolve({ code: code ?? (sig ? 128 + 9 : 1), output: out });
    });
  });
}

interface Runner {
  run(on: string, cmd: string, timeoutMs: number): Promise<{ code: number; output: string } | { notRun: string }>;
  close(): void;
}

function runner(op: OpContext, loaded: LoadedLab, r: LabRecord, o: { reuse: boolean } = { reuse: true }): Runner {
  const conn = op.conn;
  const guests = new Map<string, Promise<GuestConnection>>();
  const trusted = loaded.shipped || (r.trusted && loaded.sha256 === r.sha256);
  const why = r.trusted ? `${loaded.file} changed since lab up --trust; bring the lab up again to trust this version` : 'host commands of a lab that did not ship with vmctl run only after vmctl lab up --trust';
  const env = labEnv(conn, r);
  return {
    async run(on, cmd, timeoutMs) {
      if (on === 'host') {
        if (!trusted) return { notRun: why };
        return runHost(cmd, env, timeoutMs, op.signal);
      }
      const vm = r.vms.find((v) => v.key === on);
      if (!vm) return { notRun: `no VM '${on}' in lab ${r.id}` };
      let g = guests.get(on);
      if (!g) {
        g = vmSshTarget(conn, vm.name).then((t) => connectRunningGuest(t, { signal: op.signal }));
        guests.set(on, g);
        g.catch(() => guests.delete(on));
      }
      let guest: GuestConnection;
      try {
        guest = await g;
      } catch (e) {
        return { notRun: `cannot reach ${on} over SSH: ${(e as Error).message}` };
      }
      try {
        const c = await guestCapture(guest, cmd, { signal: op.signal, timeoutMs });
        return { code: c.code, output: c.stdout + c.stderr };
      } catch (e) {
        if (e instanceof VmctlError && e.code === 'TIMEOUT') return { code: 124, output: `(timed out after ${Math.round(timeoutMs / 1000)} s)` };
        throw e;
      } finally {
        if (!o.reuse) {
          guests.delete(on);
          guest.close();
        }
      }
    },
    close() {
      for (const g of guests.values()) void g.then((c) => c.close(), () => undefined);
    },
  };
}

async function context(op: OpContext, id: string): Promise<{ r: LabRecord; loaded: LoadedLab }> {
  const found = await mustReadLabRecord(op.conn, id);
  const r = found.record;
  if (r.state !== 'ready') throw new VmctlError('CONFLICT', `lab ${id} is not up (${r.state})`, { hint: `vmctl lab down ${r.lab} --prefix ${r.prefix}, then lab up` });
  return { r, loaded: loadLab(r.file) };
}

function exercisesOf(loaded: LoadedLab, exercise?: string): LabExerciseSpec[] {
  const all = loaded.spec.exercises;
  if (exercise === undefined) return all;
  const ex = all.find((e) => e.id === exercise);
  if (!ex) throw new VmctlError('NOT_FOUND', `lab ${loaded.spec.name} has no exercise '${exercise}'`, { hint: `its exercises: ${all.map((e) => e.id).join(', ')}` });
  return [ex];
}

export async function labCheck(op: OpContext, id: string, o: { exercise?: string; lang?: string } = {}): Promise<LabCheckResult> {
  const { r, loaded } = await context(op, id);
  const lang = o.lang ?? 'en';
  const run = runner(op, loaded, r);
  const results: CheckResult[] = [];
  try {
    for (const ex of exercisesOf(loaded, o.exercise)) {
      for (const c of ex.checks) {
        const t = performance.now();
        const name = localize(c.name, lang);
        const got = await run.run(c.on, c.run, c.timeout * 1000);
        const base = { exercise: ex.id, check: name, on: c.on, expectedExit: c.exit, ...(c.output !== undefined ? { expectedOutput: c.output } : {}) };
        let res: CheckResult;
        if ('notRun' in got) res = { ...base, passed: false, notRun: got.notRun, ms: Math.round(performance.now() - t) };
        else {
          const passed = got.code === c.exit && (c.output === undefined || new RegExp(c.output, 'm').test(got.output));
          res = { ...base, passed, exit: got.code, output: got.output.slice(-2000), ms: Math.round(performance.now() - t) };
        }
        if (!res.passed && c.hint !== undefined) res.hint = localize(c.hint, lang);
        results.push(res);
        op.phase(res.passed ? 'pass' : 'FAIL', `${ex.id}: ${name}`);
      }
    }
  } finally {
    run.close();
  }
  const failed = results.filter((x) => !x.passed).length;
  return { id, lab: r.lab, passed: results.length - failed, failed, results };
}

export async function labSolve(op: OpContext, id: string, o: { exercise?: string } = {}): Promise<{ id: string; steps: { exercise: string; on: string; exit: number }[] }> {
  const { r, loaded } = await context(op, id);
  // no lab lease: a solution step may itself run vmctl lab commands on this lab (lab up makes a
  // replaced cattle VM again); a lab down meanwhile only makes the next step fail
  const run = runner(op, loaded, r, { reuse: false });
  const steps: { exercise: string; on: string; exit: number }[] = [];
  try {
    for (const ex of exercisesOf(loaded, o.exercise)) {
      for (const s of ex.solution) {
        const got = await run.run(s.on, s.run, s.timeout * 1000);
        if ('notRun' in got) throw new VmctlError('CONFLICT', `${ex.id}: solution step on ${s.on} not run: ${got.notRun}`, { hint: 'vmctl lab up FILE --trust, after reading its host commands' });
        steps.push({ exercise: ex.id, on: s.on, exit: got.code });
        if (got.code !== 0) {
          throw new VmctlError('CONFLICT', `${ex.id}: solution step on ${s.on} exited with ${got.code}: ${got.output.trim().split('\n').slice(-3).join(' | ').slice(0, 400)}`, { hint: `the command was: ${s.run.slice(0, 200)}` });
        }
        op.phase('solved', `${ex.id} (${s.on})`);
      }
    }
  } finally {
    run.close();
  }
  return { id, steps };
}
