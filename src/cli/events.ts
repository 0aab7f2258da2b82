/**
 * Renders an operation's event stream (src/core/op/events.ts) on stderr:
 *
 * - tty:   phase lines, warnings, progress bars, and a live status line
 *          ("waiting for an IP address … 12.3 s") rewritten in place;
 * - plain: the same as lines (a "waiting for" line once per wait, progress
 *          lines every few seconds) — for pipes and CI logs;
 * - json:  every event as one JSON object per line (NDJSON), nothing else;
 * - none:  warnings only.
 *
 * `--progress auto` (the default) is tty when stderr is a terminal, plain
 * otherwise (with --json too: results stay alone on stdout), and none with
 * --log-level error|fatal|silent.
 */
import type { Logger } from 'pino';
import type { OpEventEnvelope, OpEventSink } from '../core/op/events.js';
import { createProgressRenderer } from './progress.js';

export const PROGRESS_MODES = ['auto', 'tty', 'plain', 'json', 'none'] as const;
export type ProgressMode = (typeof PROGRESS_MODES)[number];

export interface EventRenderer {
  sink: OpEventSink;
  /** stop the live line and bars (before printing results, and in finally); idempotent */
  stop(): void;
}

export interface RendererOptions {
  mode: ProgressMode;
  /** --json: results on stdout, so auto shows no chatter */
  json?: boolean;
  log?: Logger;
  logFormat?: string;
  stream?: NodeJS.WriteStream;
  /** ms between live-line refreshes (tty) */
  tickMs?: number;
}

export function resolveMode(o: Pick<RendererOptions, 'mode' | 'json' | 'log' | 'stream'>): Exclude<ProgressMode, 'auto'> {
  if (o.mode !== 'auto') return o.mode;
  const level = o.log?.level;
  if (level === 'error' || level === 'fatal' || level === 'silent') return 'none';
  return (o.stream ?? process.stderr).isTTY ? 'tty' : 'plain';
}

const SPIN = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

export function phaseLine(e: { phase: string; atMs: number; detail?: string; scope?: string }): string {
  return `  ${e.scope ? `${e.scope}: ` : ''}${e.phase.padEnd(10)} ${(e.atMs / 1000).toFixed(1).padStart(6)} s${e.detail ? `  ${e.detail}` : ''}`;
}

const scoped = (e: { scope?: string }, text: string) => (e.scope ? `${e.scope}: ${text}` : text);

export function warningLine(message: string, color: boolean): string {
  return `${color ? '\x1b[1;33m' : ''}vmctl: WARNING: ${message}${color ? '\x1b[0m' : ''}`;
}

export function createEventRenderer(o: RendererOptions): EventRenderer {
  const stream = o.stream ?? process.stderr;
  const mode = resolveMode(o);
  const write = (line: string) => stream.write(line + '\n');
  if (mode === 'json') {
    return { sink: (e) => void stream.write(JSON.stringify(e) + '\n'), stop() {} };
  }
  if (mode === 'none') {
    return {
      sink: (e) => {
        if (e.type === 'warning') write(warningLine(e.message, stream.isTTY === true));
        else if (e.type === 'fault') write(`vmctl: fault point ${e.point} (${e.action})`);
      },
      stop() {},
    };
  }
  const tty = mode === 'tty';
  const bars = createProgressRenderer({ ...(o.log ? { log: o.log } : {}), ...(o.logFormat ? { logFormat: o.logFormat } : {}), tty, stream });
  // the live line: what is awaited and for how long (tty only)
  let live: { what: string; since: number; timer: NodeJS.Timeout; frame: number } | undefined;
  // side-by-side work (a lab's VMs): what each scope waits for
  const waits = new Map<string, string>();
  let liveShown = false;
  const clearLive = () => {
    if (liveShown) stream.write('\r\x1b[2K');
    liveShown = false;
  };
  const drawLive = () => {
    if (!live) return;
    const width = Math.max(20, (stream.columns || 80) - 1);
    const text = `  ${SPIN[live.frame++ % SPIN.length]} waiting for ${live.what} … ${seconds(performance.now() - live.since)}`;
    stream.write(`\r\x1b[2K${text.length > width ? text.slice(0, width - 1) + '…' : text}`);
    liveShown = true;
  };
  const endWait = () => {
    if (live) clearInterval(live.timer);
    live = undefined;
    clearLive();
  };
  const print = (line: string) => {
    clearLive();
    bars.stop();
    write(line);
    if (live) drawLive();
  };
  const sink = (e: OpEventEnvelope) => {
    switch (e.type) {
      case 'phase':
        if (e.scope === undefined) endWait();
        else waits.delete(e.scope);
        print(phaseLine(e));
        return;
      case 'wait': {
        if (!tty) return write(`  ${scoped(e, `waiting for ${e.what} …`)}`);
        let what = e.what;
        if (e.scope !== undefined) {
          waits.set(e.scope, e.what);
          what = [...waits].map(([k, v]) => `${k}: ${v}`).join(', ');
          if (live) {
            live.what = what;
            return;
          }
        }
        endWait();
        live = { what, since: performance.now(), frame: 0, timer: setInterval(drawLive, o.tickMs ?? 100) };
        live.timer.unref();
        drawLive();
        return;
      }
      case 'progress':
        endWait();
        bars.onProgress(e);
        return;
      case 'warning':
        print(warningLine(scoped(e, e.message), tty));
        return;
      case 'notice':
        print(`vmctl: ${scoped(e, e.message)}`);
        return;
      case 'undo':
        print(e.ok ? `  undone     ${e.what}` : `  could not undo ${e.what}: ${e.error ?? 'unknown error'}`);
        return;
      case 'fault':
        print(`vmctl: fault point ${e.point} (${e.action})`);
        return;
      case 'step':
        return;
    }
  };
  return {
    sink,
    stop() {
      endWait();
      bars.stop();
    },
  };
}
