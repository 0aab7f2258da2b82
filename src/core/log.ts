/** Logging: pino to stderr. Results never go through the logger. */
import { createRequire } from 'node:module';
import type { Logger, Level } from 'pino';
import { lazyLogger, loadPino } from '../libvirt/log.js';

const require = createRequire(import.meta.url);

export type LogFormat = 'text' | 'json';
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

// fields that may carry secrets never reach a log line
const REDACT = ['password', 'passphrase', 'privateKey', 'key', '*.password', '*.passphrase', '*.privateKey', 'userData'];

/** pino (and pino-pretty for text) are loaded on the first line actually written: most runs log nothing. */
export function createLogger(level: Level | 'silent' = 'warn', format: LogFormat = 'text'): Logger {
  return lazyLogger(level, () => makeLogger(level, format));
}

function makeLogger(level: Level | 'silent', format: LogFormat): Logger {
  const pino = loadPino();
  const opts = { level, redact: { paths: REDACT, censor: '[redacted]' }, base: undefined };
  if (format === 'json') return pino(opts, pino.destination({ fd: 2, sync: true }));
  let pretty: { write(s: string): unknown } | undefined;
  const lazyPretty = {
    write(line: string) {
      if (!pretty) {
        type PrettyFactory = (o: Record<string, unknown>) => { write(s: string): unknown };
        const mod = require('pino-pretty') as PrettyFactory & { default?: PrettyFactory };
        pretty = (mod.default ?? mod)({ destination: 2, sync: true, colorize: process.stderr.isTTY, ignore: 'pid,hostname', translateTime: 'HH:MM:ss.l' });
      }
      pretty.write(line);
    },
  };
  return pino(opts, lazyPretty);
}

/** A logger that drops everything: the default for library use and tests (one instance, shared with src/libvirt). */
export { silentLogger } from '../libvirt/log.js';
export type { Logger };
