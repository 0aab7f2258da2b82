/**
 * Per-host on-disk cache for facts that are expensive to learn and change only
 * when the host changes: libvirt's capabilities XML (seconds on some hosts)
 * and the accelerator probe (tens of seconds). Lives in paths.ts cacheDir()
 * ($VMCTL_CACHE_DIR, else `$XDG_CACHE_HOME/vmctl/`, else `~/.cache/vmctl/`,
 * owner-only), one JSON file per
 * (kind, host), written atomically, read only when fresh (TTL) and made for the
 * same host.
 *
 * "The same host" is a key computed from cheap calls: hostname, libvirt and
 * hypervisor versions, the endpoint vmctl reached (transport + address + the
 * URI sent to the daemon, so two daemons on one machine — e.g. the system
 * daemon and a test daemon on TCP — never share entries), and, when the
 * connection is local, the kernel release. Upgrading libvirt, QEMU or the
 * kernel therefore starts afresh.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import type { Connection } from '../../libvirt/connection.js';
import { formatLibvirtVersion } from './version.js';
import { cacheDir, ensurePrivateDir } from '../paths.js';

/** Cached entries older than this are ignored (and overwritten on the next fetch). */
export const HOST_CACHE_TTL_MS = 7 * 24 * 3600 * 1000;
const FORMAT = 1;

export interface HostIdentity {
  /** sha256 over the fields below: the cache key */
  readonly key: string;
  readonly hostname: string;
  readonly libvirtVersion: string;
  readonly hypervisorType: string;
  readonly hypervisorVersion: string;
  /** transport endpoint + URI the daemon was opened with, e.g. 'unix:/run/libvirt/libvirt-sock qemu:///system' */
  readonly endpoint: string;
  /** the connection reaches a daemon on this machine (unix socket): /proc, /sys and /dev are the host's */
  readonly local: boolean;
  /** kernel release, local connections only */
  readonly kernel?: string;
}

/** A unix-socket connection is to a daemon on this machine; tcp/tls/ssh count as remote (even to 127.0.0.1). */
export function isLocalConnection(conn: Connection): boolean {
  return conn.uri.transport === 'unix';
}

const identities = new WeakMap<Connection, Promise<HostIdentity>>();

/** The host's identity (memoised per connection: four cheap calls the first time). */
export function hostIdentity(conn: Connection): Promise<HostIdentity> {
  let p = identities.get(conn);
  if (!p) {
    p = computeIdentity(conn);
    identities.set(conn, p);
    p.catch(() => identities.delete(conn));
  }
  return p;
}

async function computeIdentity(conn: Connection): Promise<HostIdentity> {
  const [hostname, lib, type, hv] = await Promise.all([conn.hostname(), conn.libVersion(), conn.hypervisorType(), conn.hypervisorVersion()]);
  const local = isLocalConnection(conn);
  const fields = {
    hostname,
    libvirtVersion: formatLibvirtVersion(lib),
    hypervisorType: type,
    hypervisorVersion: formatLibvirtVersion(hv),
    endpoint: `${conn.transport.description} ${conn.uri.remoteName}`,
    local,
    ...(local ? { kernel: release() } : {}),
  };
  const key = createHash('sha256').update(JSON.stringify(fields)).digest('hex').slice(0, 32);
  return { key, ...fields };
}

export interface CacheOptions {
  /** cache directory (default hostCacheDir(): hosts/ under $VMCTL_CACHE_DIR, else $XDG_CACHE_HOME/vmctl, else ~/.cache/vmctl) */
  readonly dir?: string;
  /** maximum age (default HOST_CACHE_TTL_MS) */
  readonly ttlMs?: number;
  /** the clock, for tests */
  readonly now?: () => number;
}

export interface CachedValue<T> {
  readonly value: T;
  readonly savedAt: Date;
  readonly path: string;
}

interface CacheFile<T> {
  format: number;
  kind: string;
  key: string;
  identity: HostIdentity;
  savedAt: string;
  value: T;
}

export type CacheKind = 'capabilities' | 'accel';

/** Where host caches live: their own owner-only directory (never the cache root: other things there must stay reachable). */
export function hostCacheDir(): string {
  return join(cacheDir(), 'hosts');
}

export function hostCachePath(kind: CacheKind, identity: HostIdentity, dir: string = hostCacheDir()): string {
  return join(dir, `${kind}-${identity.key}.json`);
}

/** The cached value when present, readable, made for this host and younger than the TTL; else undefined. */
export function readHostCache<T>(kind: CacheKind, identity: HostIdentity, opts: CacheOptions = {}): CachedValue<T> | undefined {
  const path = hostCachePath(kind, identity, opts.dir);
  let parsed: CacheFile<T>;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8')) as CacheFile<T>;
  } catch {
    return undefined; // missing or unreadable: a miss, never an error
  }
  if (!parsed || parsed.format !== FORMAT || parsed.kind !== kind || parsed.key !== identity.key || parsed.value === undefined) return undefined;
  const savedAt = new Date(parsed.savedAt);
  const age = (opts.now ?? Date.now)() - savedAt.getTime();
  if (!Number.isFinite(age) || age < 0 || age > (opts.ttlMs ?? HOST_CACHE_TTL_MS)) return undefined;
  return { value: parsed.value, savedAt, path };
}

/**
 * Stores a value (atomically: temp file + rename, mode 0600). A cache that
 * cannot be written is not an error: the value is simply fetched again next
 * time. Returns the path, or undefined when it could not be written.
 */
export function writeHostCache<T>(kind: CacheKind, identity: HostIdentity, value: T, opts: CacheOptions = {}): string | undefined {
  const dir = opts.dir ?? hostCacheDir();
  const path = hostCachePath(kind, identity, dir);
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const file: CacheFile<T> = {
    format: FORMAT,
    kind,
    key: identity.key,
    identity,
    savedAt: new Date((opts.now ?? Date.now)()).toISOString(),
    value,
  };
  try {
    ensurePrivateDir(dir);
    writeFileSync(tmp, JSON.stringify(file, null, 1) + '\n', { mode: 0o600 });
    renameSync(tmp, path);
    return path;
  } catch {
    try {
      rmSync(tmp, { force: true });
    } catch {
      /* nothing was written */
    }
    return undefined;
  }
}

export interface CapabilitiesResult {
  readonly xml: string;
  readonly fromCache: boolean;
  readonly fetchedAt: Date;
}

const capsByConn = new WeakMap<Connection, Promise<CapabilitiesResult>>();

/**
 * Host capabilities XML through the per-host disk cache: memoised per
 * connection, then read from disk when fresh, else fetched (conn.capabilities())
 * and stored. `refresh` skips the disk (and the per-connection memo).
 * For host checks and the accelerator choice only: keep it off hot paths.
 */
export function hostCapabilities(conn: Connection, opts: CacheOptions & { refresh?: boolean } = {}): Promise<CapabilitiesResult> {
  const memo = capsByConn.get(conn);
  if (memo && !opts.refresh) return memo;
  const p = (async (): Promise<CapabilitiesResult> => {
    const id = await hostIdentity(conn);
    if (!opts.refresh) {
      const hit = readHostCache<string>('capabilities', id, opts);
      if (hit && typeof hit.value === 'string' && hit.value.includes('<capabilities')) {
        return { xml: hit.value, fromCache: true, fetchedAt: hit.savedAt };
      }
    }
    const xml = await conn.capabilities();
    const fetchedAt = new Date((opts.now ?? Date.now)());
    writeHostCache('capabilities', id, xml, opts);
    return { xml, fromCache: false, fetchedAt };
  })();
  capsByConn.set(conn, p);
  p.catch(() => capsByConn.delete(conn));
  return p;
}
