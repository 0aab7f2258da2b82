/**
 * Loggers that load pino only when a line is actually written: pino and its
 * dependencies are ~40 CommonJS files (~45 ms of every command's start-up on
 * a slow host), and most runs log nothing at the default level. The libvirt
 * layer's default logger is silent. It never imports from core or cli (see
 * eslint.config.js).
 */
import { createRequire } from 'node:module';
import type { Level, Logger, LoggerOptions } from 'pino';

const require = createRequire(import.meta.url);

const LEVEL_VALUES: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };
const METHODS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

type PinoFactory = ((opts: LoggerOptions, dest?: unknown) => Logger) & { destination(o: { fd: number; sync: boolean }): unknown };

/** pino itself, loaded on first use (synchronously: it is CommonJS). */
export function loadPino(): PinoFactory {
  const mod = require('pino') as PinoFactory & { pino?: PinoFactory };
  return mod.pino ?? mod;
}

/**
 * A logger at `level` whose real pino logger is made by `make` on the first enabled call. It has
 * what vmctl uses of pino's Logger: the level methods, isLevelEnabled, level, child.
 */
export function lazyLogger(level: Level | 'silent', make: () => Logger): Logger {
  let real: Logger | undefined;
  const get = () => (real ??= make());
  const threshold = LEVEL_VALUES[level] ?? LEVEL_VALUES['warn']!;
  const enabled = (l: string) => (LEVEL_VALUES[l] ?? Infinity) >= threshold;
  const facade: Record<string, unknown> = {
    level,
    isLevelEnabled: (l: string) => enabled(l),
    child: (bindings: Record<string, unknown>, opts?: Record<string, unknown>) => lazyLogger(level, () => get().child(bindings, opts)),
  };
  for (const m of METHODS) {
    facade[m] = (...args: unknown[]) => {
      if (!enabled(m)) return;
      (get()[m] as (...a: unknown[]) => void)(...args);
    };
  }
  return facade as unknown as Logger;
}

/** A logger that drops everything: the default for library use and tests. */
export const silentLogger: Logger = lazyLogger('silent', () => loadPino()({ level: 'silent' }));
export type { Logger };
