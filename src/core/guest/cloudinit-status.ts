/**
 * cloud-init's own report from inside the guest: `cloud-init status` output
 * (JSON, or the older tabular --long form) parsed, and the wait for it over SSH.
 */
import { VmctlError } from '../errors.js';
import type { GuestConnection } from './ssh-connect.js';
import { guestCapture, type GuestCaptureResult } from './ssh-exec.js';

export interface CloudInitStatus {
  /** 'done', 'error', 'degraded', 'disabled', 'running', 'not run' (cloud-init's own words) */
  readonly status: string;
  /** newer cloud-init: e.g. 'degraded done' */
  readonly extendedStatus?: string;
  readonly errors: readonly string[];
  /** newer cloud-init: warnings/deprecations per level */
  readonly recoverableErrors?: Readonly<Record<string, readonly string[]>>;
  readonly detail: string;
  readonly bootStatusCode?: string;
  readonly datasource?: string;
  readonly lastUpdate?: string;
  /** exit status of `cloud-init status` */
  readonly exitCode: number;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

export function parseCloudInitStatusJson(text: string, exitCode: number): CloudInitStatus | undefined {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (j === null || typeof j !== 'object' || typeof (j as Record<string, unknown>).status !== 'string') return undefined;
  const o = j as Record<string, unknown>;
  const errors = Array.isArray(o.errors) ? o.errors.map(String) : [];
  let recoverable: Record<string, string[]> | undefined;
  if (o.recoverable_errors && typeof o.recoverable_errors === 'object') {
    recoverable = {};
    for (const [k, v] of Object.entries(o.recoverable_errors as Record<string, unknown>)) {
      if (Array.isArray(v)) recoverable[k] = v.map(String);
    }
  }
  const extended = str(o.extended_status);
  const boot = str(o.boot_status_code);
  const ds = str(o.datasource);
  const last = str(o.last_update);
  return {
    status: o.status as string,
    ...(extended !== undefined ? { extendedStatus: extended } : {}),
    errors,
    ...(recoverable ? { recoverableErrors: recoverable } : {}),
    detail: str(o.detail) ?? '',
    ...(boot !== undefined ? { bootStatusCode: boot } : {}),
    ...(ds ? { datasource: ds } : {}),
    ...(last ? { lastUpdate: last } : {}),
    exitCode,
  };
}

/** `cloud-init status --long` (tabular) output, for cloud-init without --format. */
export function parseCloudInitStatusText(text: string, exitCode: number): CloudInitStatus | undefined {
  const lines = text.replace(/^\.+/, '').split('\n');
  let status: string | undefined;
  let boot: string | undefined;
  let last: string | undefined;
  const detail: string[] = [];
  let inDetail = false;
  for (const raw of lines) {
    const line = raw.replace(/^\.+/, '');
    if (inDetail) {
      detail.push(line);
      continue;
    }
    let m: RegExpExecArray | null;
    if ((m = /^status: (.*)$/.exec(line))) status = m[1]!.trim();
    else if ((m = /^boot_status_code: (.*)$/.exec(line))) boot = m[1]!.trim();
    else if ((m = /^last_update: (.*)$/.exec(line))) last = m[1]!.trim();
    else if (/^detail:/.test(line)) inDetail = true;
  }
  if (status === undefined) return undefined;
  const d = detail.join('\n').trim();
  return {
    status,
    errors: status === 'error' && d ? d.split('\n') : [],
    detail: d,
    ...(boot !== undefined ? { bootStatusCode: boot } : {}),
    ...(last !== undefined ? { lastUpdate: last } : {}),
    exitCode,
  };
}

const RESULT_MARK = 'vmctl-cloud-init-result';
/**
 * sh: wait (up to 900 s) for result.json while cloud-init is enabled, then print it after a
 * marker line. The wait is a bare `python3 -S` (no site, no cloud-init import: ~0.2 s to start
 * under TCG) polling in-process every 0.2 s, not a shell loop forking `sleep` five times a
 * second beside cloud-init; without python3 the shell loop, once a second.
 */
export const CLOUD_INIT_RESULT_WAIT =
  'r=/run/cloud-init/result.json; if [ -e /run/cloud-init/enabled ] && [ ! -e /etc/cloud/cloud-init.disabled ]; then ' +
  `python3 -S -c 'import os, time\nfor _ in range(4500):\n    if os.path.exists("/run/cloud-init/result.json"): break\n    time.sleep(0.2)' 2>/dev/null || ` +
  '{ i=0; while [ ! -e $r ] && [ $i -lt 900 ]; do sleep 1; i=$((i+1)); done; }; fi; ' +
  `if [ -e $r ]; then echo ${RESULT_MARK}; cat $r; fi`;

/**
 * cloud-init's result.json (`{"v1": {"datasource": "DataSourceNoCloud [seed=…]", "errors": []}}`)
 * as printed by CLOUD_INIT_RESULT_WAIT → status 'done' when it lists no errors; undefined
 * otherwise (no result, errors, unknown shape: the caller asks `cloud-init status`).
 */
export function parseCloudInitResult(text: string): CloudInitStatus | undefined {
  const i = text.indexOf(`${RESULT_MARK}\n`);
  if (i < 0) return undefined;
  let j: unknown;
  try {
    j = JSON.parse(text.slice(i + RESULT_MARK.length + 1));
  } catch {
    return undefined;
  }
  const v1 = j !== null && typeof j === 'object' ? (j as Record<string, unknown>).v1 : undefined;
  if (v1 === null || typeof v1 !== 'object') return undefined;
  const o = v1 as Record<string, unknown>;
  if (!Array.isArray(o.errors) || o.errors.length > 0) return undefined;
  // `cloud-init status` names the datasource the same way: "DataSourceNoCloud [seed=…]" → "nocloud"
  const m = typeof o.datasource === 'string' ? /^DataSource(\w+)/.exec(o.datasource) : null;
  return { status: 'done', errors: [], detail: '', ...(m ? { datasource: m[1]!.toLowerCase() } : {}), exitCode: 0 };
}

/**
 * Wait for cloud-init in the guest to finish (result.json without errors, see
 * CLOUD_INIT_RESULT_WAIT; else `cloud-init status --wait --format json`,
 * falling back to `--long` for cloud-init without --format)
 * and return its status and errors. It does not throw when cloud-init
 * reports errors: look at `status` / `errors`.
 */
export async function waitForCloudInit(conn: GuestConnection, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<CloudInitStatus> {
  const run = async (cmd: string): Promise<GuestCaptureResult> => {
    try {
      return await guestCapture(conn, cmd, {
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      });
    } catch (err) {
      if (err instanceof VmctlError && err.code === 'TIMEOUT' && err.details?.aborted) {
        throw new VmctlError('TIMEOUT', `cloud-init in ${conn.host}:${conn.port} did not finish within ${Math.round((opts.timeoutMs ?? 0) / 1000)} s`, {
          hint: "look at 'cloud-init status --long' and /var/log/cloud-init.log in the guest",
          cause: err,
        });
      }
      throw err;
    }
  };
  // Fast path: wait in the shell for cloud-init's result.json (written when its final stage
  // is done; /run is fresh each boot) and read it, instead of a second Python process that
  // spends seconds importing cloud-init under TCG, competing with cloud-init itself for the
  // guest's CPU. Only while cloud-init is enabled (the generator's marker), and only a result
  // without errors is taken as is: anything else asks `cloud-init status` for the full story.
  const fast = await run(CLOUD_INIT_RESULT_WAIT);
  const quick = parseCloudInitResult(fast.stdout);
  if (quick) return quick;
  const r = await run('cloud-init status --wait --format json');
  const parsed = parseCloudInitStatusJson(r.stdout, r.code);
  if (parsed) return parsed;
  if (r.code === 127) {
    throw new VmctlError('UNSUPPORTED', 'cloud-init is not installed in the guest', { hint: 'use an image with cloud-init' });
  }
  if (/unrecognized arguments|invalid choice|--format/.test(r.stderr)) {
    const t = await run('cloud-init status --wait --long');
    const p = parseCloudInitStatusText(t.stdout, t.code);
    if (p) return p;
    throw new VmctlError('INTERNAL', `cannot parse 'cloud-init status --long' output: ${JSON.stringify(t.stdout.slice(0, 200))}`);
  }
  throw new VmctlError('INTERNAL', `'cloud-init status' failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 300)}`);
}
