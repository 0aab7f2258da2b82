/**
 * Progress on stderr (never stdout): a cli-progress bar when stderr is a
 * terminal, otherwise a plain line at each phase change, every few seconds
 * and at the end of a phase. With --log-format json the lines are pino records
 * (level info); with --log-level error/fatal/silent nothing is shown.
 *
 *   const progress = createProgressRenderer({ log: ctx.log, logFormat: argv['log-format'] });
 *   await importImage(conn, { ..., onProgress: (p) => progress.onProgress(p) });
 *   progress.stop();   // always (finally): removes the bar
 *
 * (progressReporter(ctx) → { update, done } is the same thing under other names.)
 *
 * Events are `{ phase, done, total?, message? }` (ImageProgress from
 * src/core/images.ts is one): transfers (events carrying bytesPerSecond) show
 * bytes, rate and ETA; everything else shows done/total as a percentage.
 */
import cliProgress from 'cli-progress';
import type { Logger } from 'pino';
import { formatBytes } from './render.js';
import type { ProgressFields } from '../core/op/events.js';

/** What a progress bar shows: an operation's progress event (src/core/op/events.ts). */
export type ProgressEvent = ProgressFields;

export interface ProgressReporter {
  update(p: ProgressEvent): void;
  /** remove the bar (call before printing anything else, and in finally); idempotent */
  done(): void;
}

export interface ProgressRenderer {
  onProgress(p: ProgressEvent): void;
  /** remove the bar (call before printing anything else, and in finally); idempotent */
  stop(): void;
}

export interface ProgressOptions {
  /** the command's logger: its level decides whether anything is shown */
  log?: Logger;
  /** default: stream.isTTY */
  tty?: boolean;
  /** default: process.stderr */
  stream?: NodeJS.WriteStream;
  /** seconds between non-TTY lines of one phase (default 5) */
  intervalSeconds?: number;
  /** 'json' sends non-TTY lines to the logger */
  logFormat?: string;
}

function eta(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

const isTransfer = (p: ProgressEvent) => typeof p.bytesPerSecond === 'number';

function label(p: ProgressEvent): string {
  return [p.phase, p.image, p.item].filter((s) => s !== undefined && s !== '').join(' ');
}

/** One line describing an event (what non-TTY output prints). */
export function progressLine(p: ProgressEvent): string {
  if (!isTransfer(p)) {
    const pct = p.total ? ` ${Math.floor((p.done / p.total) * 100)}%` : '';
    return `${label(p)}:${pct}${p.message ? ` ${p.message}` : ''}`;
  }
  const pct = p.total ? ` ${Math.floor((p.done / p.total) * 100)}%` : '';
  const of = p.total !== undefined ? ` of ${formatBytes(p.total)}` : '';
  const tail = p.finished ? 'done' : `${formatBytes(p.bytesPerSecond ?? 0)}/s, ETA ${eta(p.etaSeconds)}`;
  return `${label(p)}:${pct} ${formatBytes(p.done)}${of}, ${tail}`;
}

/** A renderer for a command: quiet with --log-level error/fatal/silent. */
export function createProgressRenderer(opts: ProgressOptions = {}): ProgressRenderer {
  const stream = opts.stream ?? process.stderr;
  const tty = opts.tty ?? stream.isTTY === true;
  const level = opts.log?.level;
  if (level === 'error' || level === 'fatal' || level === 'silent') return { onProgress() {}, stop() {} };
  const r = tty ? barReporter(stream) : lineReporter(stream, opts.log, opts);
  return { onProgress: (p) => r.update(p), stop: () => r.done() };
}

/** The same as createProgressRenderer, named update/done. */
export function progressReporter(ctx: { log: Logger }, opts: ProgressOptions = {}): ProgressReporter {
  const r = createProgressRenderer({ ...opts, log: ctx.log });
  return { update: (p) => r.onProgress(p), done: () => r.stop() };
}

function barReporter(stream: NodeJS.WriteStream): ProgressReporter {
  let bar: cliProgress.SingleBar | undefined;
  let key = '';
  const done = () => {
    bar?.stop();
    bar = undefined;
    key = '';
  };
  return {
    done,
    update(p) {
      const transfer = isTransfer(p);
      const k = `${p.phase}:${transfer ? (p.total === undefined ? 'bytes?' : 'bytes') : 'pct'}`;
      const value = p.total === undefined ? 0 : Math.min(p.done, p.total);
      const payload = {
        label: label(p),
        message: (p.message ?? '').slice(0, 60),
        doneText: formatBytes(p.done),
        totalText: p.total === undefined ? '?' : formatBytes(p.total),
        rate: formatBytes(p.bytesPerSecond ?? 0),
        etaText: eta(p.etaSeconds),
      };
      if (k !== key || !bar) {
        done();
        key = k;
        bar = new cliProgress.SingleBar(
          {
            stream,
            hideCursor: true,
            barsize: 28,
            fps: 8,
            format: !transfer
              ? '{label} |{bar}| {percentage}% {message}'
              : p.total === undefined
                ? '{label} {doneText} | {rate}/s'
                : '{label} |{bar}| {percentage}% | {doneText} of {totalText} | {rate}/s | ETA {etaText}',
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(Math.max(1, p.total ?? 1), value, payload);
      } else {
        bar.update(value, payload);
      }
      if (p.finished) done();
    },
  };
}

function lineReporter(stream: NodeJS.WriteStream, log: Logger | undefined, opts: ProgressOptions): ProgressReporter {
  const intervalMs = (opts.intervalSeconds ?? 5) * 1000;
  let lastKey = '';
  let lastAt = 0;
  let lastMessage = '';
  return {
    done() {},
    update(p) {
      const key = `${p.phase}:${p.item ?? ''}`;
      const now = Date.now();
      const message = p.message ?? '';
      if (key !== lastKey || message !== lastMessage || p.finished || now - lastAt >= intervalMs) {
        lastKey = key;
        lastAt = now;
        lastMessage = message;
        const line = progressLine(p);
        if (opts.logFormat === 'json' && log) log.info({ progress: p }, line);
        else stream.write(`vmctl: ${line}\n`);
      }
    },
  };
}
