/** The libvirt layer's default logger: silent. It never imports from core or cli (see eslint.config.js). */
import { pino, type Logger } from 'pino';

/** A logger that drops everything: the default for library use and tests. */
export const silentLogger: Logger = pino({ level: 'silent' });
export type { Logger };
