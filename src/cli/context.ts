/** What every command handler gets: parsed global options, a logger, output, a connection factory. */
import type { Logger } from 'pino';
import { createLogger, type LogFormat } from '../core/log.js';
import type { Connection } from '../libvirt/connection.js';
import { parseLibvirtUri, plaintextConnectionWarning, resolveDefaultUri } from '../libvirt/uri.js';

export interface GlobalArgs {
  connect?: string;
  json?: boolean;
  'log-level'?: string;
  'log-format'?: string;
  'accept-host-key'?: boolean;
  progress?: string;
}

export interface Output {
  /** a result line for humans (stdout) */
  line(text: string): void;
  /** a machine-readable result (stdout), used with --json */
  json(value: unknown): void;
}

export interface Context {
  readonly json: boolean;
  readonly uri: string;
  readonly log: Logger;
  readonly out: Output;
  /** a loud warning on stderr (never on stdout, so --json stays clean) */
  warn(message: string): void;
  /** a human progress/status line on stderr */
  err(line: string): void;
  /** open a connection: the one named by --connect / LIBVIRT_DEFAULT_URI, or `uri` */
  open(uri?: string): Promise<Connection>;
  /** open the connection, run fn, always close */
  withConnection<T>(fn: (conn: Connection) => Promise<T>): Promise<T>;
}

/** JSON with bigint as decimal strings and Buffers as hex. */
export function toJson(value: unknown): string {
  return JSON.stringify(
    value,
    (_k, v: unknown) => {
      if (typeof v === 'bigint') return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
      if (v && typeof v === 'object' && (v as { type?: unknown }).type === 'Buffer' && Array.isArray((v as { data?: unknown }).data)) {
        return Buffer.from((v as { data: number[] }).data).toString('hex');
      }
      return v;
    },
    2,
  );
}

export const stdout: Output = {
  line: (text) => process.stdout.write(text + '\n'),
  json: (value) => process.stdout.write(toJson(value) + '\n'),
};

export function makeContext(argv: GlobalArgs, out: Output = stdout): Context {
  const log = createLogger((argv['log-level'] ?? 'warn') as 'warn', (argv['log-format'] ?? 'text') as LogFormat);
  const uri = resolveDefaultUri(argv.connect);
  const warnedPlaintext = new Set<string>();
  const ctx: Context = {
    json: argv.json === true,
    uri,
    log,
    out,
    warn(message) {
      const tty = process.stderr.isTTY;
      process.stderr.write(`${tty ? '\x1b[1;33m' : ''}vmctl: WARNING: ${message}${tty ? '\x1b[0m' : ''}\n`);
    },
    err(line) {
      process.stderr.write(line + '\n');
    },
    open(other) {
      const target = other ?? uri;
      if (!warnedPlaintext.has(target)) {
        warnedPlaintext.add(target);
        const warning = plaintextWarningFor(target);
        if (warning !== undefined) ctx.warn(warning);
      }
      // the RPC client and the generated protocol load only when a command connects
      return import('../libvirt/connection.js').then(({ Connection }) => Connection.open(target, { logger: log, acceptUnknownHostKey: argv['accept-host-key'] === true }));
    },
    async withConnection(fn) {
      const conn = await this.open();
      try {
        return await fn(conn);
      } finally {
        await conn.close();
      }
    },
  };
  return ctx;
}

/** The clear-text warning for `uri` (qemu+tcp:// off loopback), said before connecting; a bad URI is Connection.open's to report. */
export function plaintextWarningFor(uri: string): string | undefined {
  try {
    return plaintextConnectionWarning(parseLibvirtUri(uri));
  } catch {
    return undefined;
  }
}
