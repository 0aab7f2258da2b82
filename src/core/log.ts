/** Logging: pino to stderr. Results never go through the logger. */
import { pino, type Logger, type Level } from 'pino';
import pretty from 'pino-pretty';

export type LogFormat = 'text' | 'json';
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

// fields that may carry secrets never reach a log line
const REDACT = ['password', 'passphrase', 'privateKey', 'key', '*.password', '*.passphrase', '*.privateKey', 'userData'];

export function createLogger(level: Level | 'silent' = 'warn', format: LogFormat = 'text'): Logger {
  const opts = { level, redact: { paths: REDACT, censor: '[redacted]' }, base: undefined };
  if (format === 'json') return pino(opts, pino.destination({ fd: 2, sync: true }));
  return pino(opts, pretty({ destination: 2, sync: true, colorize: process.stderr.isTTY, ignore: 'pid,hostname', translateTime: 'HH:MM:ss.l' }));
}

/** A logger that drops everything: the default for library use and tests. */
export const silentLogger: Logger = pino({ level: 'silent' });
export type { Logger };
