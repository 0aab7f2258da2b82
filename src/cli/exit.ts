/** The one place mapping error codes to process exit statuses. */
import type { ErrorCode } from '../core/errors.js';

export const EXIT_OK = 0;
/** Ctrl-C / SIGTERM: like a shell's 128 + SIGINT */
export const EXIT_INTERRUPTED = 130;

const EXIT_CODES: Record<ErrorCode, number> = {
  USAGE: 2,
  INVALID_INPUT: 2,
  INVALID_TEMPLATE: 2,
  NOT_FOUND: 3,
  ALREADY_EXISTS: 4,
  CONFLICT: 4,
  CONNECTION: 5,
  AUTH: 6,
  HOST_KEY: 6,
  TIMEOUT: 7,
  RESOURCE: 8,
  UNSUPPORTED: 9,
  LIBVIRT: 10,
  ABORTED: 130,
  INTERNAL: 70,
};

export function exitCodeFor(code: ErrorCode): number {
  return EXIT_CODES[code];
}
