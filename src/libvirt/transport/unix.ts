/**
 * Local UNIX socket transport (qemu:///system, qemu:///session,
 * qemu+unix:///system?socket=PATH).
 *
 * Socket selection follows libvirt's remote_sockets.c (remoteGetUNIXSocket,
 * mode=auto): the modular per-driver daemon socket (virtqemud-sock) when it
 * exists, else the monolithic libvirtd socket (libvirt-sock). The session
 * daemon is used for /session URIs (and test+X:// URIs) when not root;
 * root's qemu:///session goes to the system daemon, exactly as in libvirt.
 * vmctl never autostarts a daemon.
 */
import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fail, waitForSocket } from './common.js';
import { TransportError, errMessage, errnoCode } from './errors.js';
import type { ConnectedTransport, LibvirtUri, TransportOptions } from './types.js';
import { uriParam } from '../uri.js';

/** Where system daemons put their sockets. */
export const SYSTEM_SOCKET_DIR = '/run/libvirt';

export interface UnixSocketHost {
  readonly euid: number;
  readonly env: NodeJS.ProcessEnv;
  readonly home: string;
  exists(path: string): boolean;
}

export function realUnixSocketHost(): UnixSocketHost {
  return {
    euid: typeof process.geteuid === 'function' ? process.geteuid() : 0,
    env: process.env,
    home: homedir(),
    exists: (p) => existsSync(p),
  };
}

export interface UnixSocketChoice {
  /** the socket to connect to */
  readonly path: string;
  /** true when ?socket= gave the path */
  readonly explicit: boolean;
  /** true when the per-user session daemon is meant */
  readonly session: boolean;
  /** sockets considered, in order of preference (for error messages) */
  readonly candidates: readonly string[];
  /** true when none of the candidates exists (mode=auto only) */
  readonly noneExists: boolean;
}

/** $XDG_RUNTIME_DIR/libvirt, else ~/.cache/libvirt (glib's g_get_user_runtime_dir fallback) */
export function userRuntimeDir(host: UnixSocketHost): string {
  const xdg = host.env['XDG_RUNTIME_DIR'];
  if (xdg !== undefined && xdg !== '') return join(xdg, 'libvirt');
  const cache = host.env['XDG_CACHE_HOME'];
  return join(cache !== undefined && cache !== '' ? cache : join(host.home, '.cache'), 'libvirt');
}

/** Does this URI want the per-user session daemon? (remoteGetURIDaemonInfo) */
export function wantsSessionDaemon(uri: LibvirtUri, euid: number): boolean {
  if (euid === 0) return false;
  return uri.path === '/session' || /^test\+/i.test(uri.original);
}

export function chooseUnixSocket(uri: LibvirtUri, readOnly = false, host: UnixSocketHost = realUnixSocketHost()): UnixSocketChoice {
  const session = wantsSessionDaemon(uri, host.euid);
  const explicit = uriParam(uri, 'socket');
  if (explicit !== undefined && explicit !== '') {
    return { path: explicit, explicit: true, session, candidates: [explicit], noneExists: false };
  }
  const dir = session ? userRuntimeDir(host) : SYSTEM_SOCKET_DIR;
  const suffix = readOnly && !session ? 'sock-ro' : 'sock';
  const direct = `${dir}/virt${uri.driver}d-${suffix}`;
  const legacy = `${dir}/libvirt-${suffix}`;
  const mode = uriParam(uri, 'mode') ?? 'auto';
  if (mode === 'direct') return { path: direct, explicit: false, session, candidates: [direct], noneExists: false };
  if (mode === 'legacy') return { path: legacy, explicit: false, session, candidates: [legacy], noneExists: false };
  const candidates = [direct, legacy];
  if (host.exists(direct)) return { path: direct, explicit: false, session, candidates, noneExists: false };
  if (host.exists(legacy)) return { path: legacy, explicit: false, session, candidates, noneExists: false };
  return { path: legacy, explicit: false, session, candidates, noneExists: true };
}

const START_SYSTEM =
  "libvirtd is not running: start it (sudo systemctl start libvirtd, or scripts/libvirtd.sh start in a vmctl checkout) or check --connect";
const START_SESSION =
  "vmctl does not autostart the session daemon yet: start it as your user with 'libvirtd --daemon' (or 'virtqemud --daemon'), or use --connect qemu:///system";

function notRunning(choice: UnixSocketChoice, cause?: unknown): TransportError {
  const where =
    choice.candidates.length > 1
      ? `no daemon socket at ${choice.candidates.join(' or ')}`
      : `no daemon socket at ${choice.path}`;
  if (choice.explicit) {
    return fail('CONNECT_FAILED', `cannot connect to libvirt: ${where} (from ?socket=)`, 'check the socket= path in --connect, or start the daemon that should own it', cause);
  }
  if (choice.session) {
    return fail('CONNECT_FAILED', `the libvirt session daemon is not running (${where})`, START_SESSION, cause);
  }
  return fail('CONNECT_FAILED', `cannot connect to libvirt: ${where}`, START_SYSTEM, cause);
}

/** Translate a connect(2) failure on a UNIX socket into a one-line TransportError. */
export function describeUnixError(choice: UnixSocketChoice, err: Error): TransportError {
  const code = errnoCode(err);
  const p = choice.path;
  switch (code) {
    case 'ENOENT':
      return notRunning(choice, err);
    case 'ECONNREFUSED':
      return fail(
        'CONNECT_FAILED',
        `cannot connect to libvirt: nothing is listening on ${p} (stale socket of a stopped daemon?)`,
        choice.explicit ? 'check the socket= path in --connect, or start the daemon that should own it' : choice.session ? START_SESSION : START_SYSTEM,
        err,
      );
    case 'EACCES':
    case 'EPERM':
      return fail(
        'PERMISSION_DENIED',
        `cannot connect to libvirt: permission denied on ${p}`,
        choice.session
          ? `check the ownership of ${p}`
          : "run vmctl as root, or add your user to the 'libvirt' group (then log in again), or use --connect qemu:///session",
        err,
      );
    case 'ENOTSOCK':
    case 'ENOTDIR':
      return fail('CONNECT_FAILED', `cannot connect to libvirt: ${p} is not a socket`, 'check the socket path / --connect', err);
    default:
      return fail('CONNECT_FAILED', `cannot connect to libvirt socket ${p}: ${errMessage(err)}`, undefined, err);
  }
}

/** Connect to an explicit socket path (no selection logic). */
export async function connectUnixPath(path: string, opts?: TransportOptions, choice?: UnixSocketChoice): Promise<ConnectedTransport> {
  const ch: UnixSocketChoice = choice ?? { path, explicit: true, session: false, candidates: [path], noneExists: false };
  const sock = createConnection({ path });
  await waitForSocket(sock, 'connect', path, opts, (err) => describeUnixError(ch, err));
  return {
    stream: sock,
    description: `unix:${path}`,
    close: () => {
      sock.destroy();
    },
  };
}

export async function connectUnix(uri: LibvirtUri, opts?: TransportOptions, host?: UnixSocketHost): Promise<ConnectedTransport> {
  const choice = chooseUnixSocket(uri, opts?.readOnly ?? false, host);
  if (choice.noneExists) throw notRunning(choice);
  return connectUnixPath(choice.path, opts, choice);
}
