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
 *
 * The hypervisor version is the one identity field that is not cheap: on a
 * host where libvirt keeps re-probing QEMU (e.g. /dev/kvm unusable for the
 * QEMU user) virConnectGetVersion takes seconds. hostIdentityCached() reuses
 * it from an 'identity' entry keyed on all the other (cheap) fields, for
 * HOST_IDENTITY_TTL_MS; hostIdentity() always asks.
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
/**
 * How long a host's QEMU version found by hostIdentityCached() is reused without asking again
 * (and how long answers that depend on the host's CPU, e.g. a CPU comparison, are kept): an
 * upgrade of QEMU alone, which changes nothing else vmctl can see cheaply, shows within this.
 */
export const HOST_IDENTITY_TTL_MS = 3600 * 1000;
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
/** the 'identity' entry's key per connection, for forgetHostIdentity() */
const quickKeys = new WeakMap<Connection, string>();

/** The host's identity (memoised per connection: four cheap calls the first time). */
export function hostIdentity(conn: Connection): Promise<HostIdentity> {
  return memoIdentity(conn, () => computeIdentity(conn));
}

/**
 * The host's identity with the hypervisor version reused from the disk cache when an entry for
 * the same host (every other identity field equal) is younger than HOST_IDENTITY_TTL_MS: three
 * cheap calls instead of four, the fourth being the one that can cost seconds. Shares the
 * per-connection memo with hostIdentity() (whichever runs first on a connection decides).
 */
export function hostIdentityCached(conn: Connection, opts: CacheOptions = {}): Promise<HostIdentity> {
  return memoIdentity(conn, async () => {
    const quick = await cheapIdentityFields(conn);
    const qkey = { key: quickKey(quick) };
    quickKeys.set(conn, qkey.key);
    const hit = readHostCache<HostIdentity>('identity', qkey, { ttlMs: HOST_IDENTITY_TTL_MS, ...opts });
    if (hit && typeof hit.value?.hypervisorVersion === 'string') {
      const id = identityOf(quick, hit.value.hypervisorVersion);
      if (id.key === hit.value.key) return id;
    }
    const id = identityOf(quick, formatLibvirtVersion(await conn.hypervisorVersion()));
    writeHostCache('identity', qkey, id, opts);
    return id;
  });
}

/**
 * Forget the cached identity of the host behind `conn` (memo and disk entry, when
 * hostIdentityCached() made them): the next hostIdentityCached() asks again. No call to the host
 * (it may be gone: this is for after a failure).
 */
export function forgetHostIdentity(conn: Connection, opts: CacheOptions = {}): void {
  identities.delete(conn);
  const k = quickKeys.get(conn);
  if (!k) return;
  try {
    rmSync(hostCachePath('identity', { key: k }, opts.dir), { force: true });
  } catch {
    /* the entry expires by itself */
  }
}

function memoIdentity(conn: Connection, compute: () => Promise<HostIdentity>): Promise<HostIdentity> {
  let p = identities.get(conn);
  if (!p) {
    p = compute();
    identities.set(conn, p);
    p.catch(() => identities.delete(conn));
  }
  return p;
}

type CheapFields = Omit<HostIdentity, 'key' | 'hypervisorVersion'>;

async function cheapIdentityFields(conn: Connection): Promise<CheapFields> {
  const [hostname, lib, type] = await Promise.all([conn.hostname(), conn.libVersion(), conn.hypervisorType()]);
  const local = isLocalConnection(conn);
  return {
    hostname,
    libvirtVersion: formatLibvirtVersion(lib),
    hypervisorType: type,
    endpoint: `${conn.transport.description} ${conn.uri.remoteName}`,
    local,
    ...(local ? { kernel: release() } : {}),
  };
}

const quickKey = (f: CheapFields): string => createHash('sha256').update(JSON.stringify({ quick: 1, ...f })).digest('hex').slice(0, 32);

function identityOf(f: CheapFields, hypervisorVersion: string): HostIdentity {
  // the field order of the key's JSON is the one identities always had (existing cache entries stay valid)
  const fields = {
    hostname: f.hostname,
    libvirtVersion: f.libvirtVersion,
    hypervisorType: f.hypervisorType,
    hypervisorVersion,
    endpoint: f.endpoint,
    local: f.local,
    ...(f.kernel !== undefined ? { kernel: f.kernel } : {}),
  };
  const key = createHash('sha256').update(JSON.stringify(fields)).digest('hex').slice(0, 32);
  return { key, ...fields };
}

async function computeIdentity(conn: Connection): Promise<HostIdentity> {
  const [quick, hv] = await Promise.all([cheapIdentityFields(conn), conn.hypervisorVersion()]);
  return identityOf(quick, formatLibvirtVersion(hv));
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
  identity: HostKey;
  savedAt: string;
  value: T;
}

export type CacheKind = 'capabilities' | 'accel' | 'identity' | 'domcaps' | 'cpu-compare';

/** What a cache entry is keyed on: a HostIdentity (or, for 'identity' entries, the key of its cheap fields). */
export type HostKey = Pick<HostIdentity, 'key'> & Partial<HostIdentity>;

/** Where host caches live: their own owner-only directory (never the cache root: other things there must stay reachable). */
export function hostCacheDir(): string {
  return join(cacheDir(), 'hosts');
}

export function hostCachePath(kind: CacheKind, identity: HostKey, dir: string = hostCacheDir()): string {
  return join(dir, `${kind}-${identity.key}.json`);
}

/** The cached value when present, readable, made for this host and younger than the TTL; else undefined. */
export function readHostCache<T>(kind: CacheKind, identity: HostKey, opts: CacheOptions = {}): CachedValue<T> | undefined {
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
export function writeHostCache<T>(kind: CacheKind, identity: HostKey, value: T, opts: CacheOptions = {}): string | undefined {
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

export interface VirtTypeResult {
  /** the best domain type the host runs for that arch: 'kvm' when KVM is usable there, else 'qemu' (TCG) */
  readonly virtType: string;
  /** where the answer came from */
  readonly from: 'capabilities-cache' | 'domcaps-cache' | 'domcaps';
}

const virtTypeMemo = new WeakMap<Connection, Map<string, Promise<VirtTypeResult>>>();

/** Whether capabilities XML lists domain type `type` for guests of `arch`. */
export function capsHaveDomainType(capsXml: string, arch: string, type: string): boolean {
  const guests = capsXml.split('<guest>').slice(1);
  return guests.some((g) => g.includes(`<arch name='${arch}'>`) && g.includes(`<domain type='${type}'`));
}

/**
 * KVM or TCG for guests of `arch` on the host, as cheaply as it can be known: from a fresh
 * capabilities entry of the disk cache, else a fresh 'domcaps' entry, else the host's domain
 * capabilities for that arch (no virttype: libvirt answers with kvm when KVM is usable, else
 * qemu; one QEMU binary, where the full capabilities cover all of them), then stored. The same
 * fact libvirt's capabilities give (its `<domain type='kvm'>` per guest arch), invalidated
 * with the host's identity (libvirt/QEMU version) and HOST_CACHE_TTL_MS.
 */
export function hostVirtType(conn: Connection, arch: string, opts: CacheOptions = {}): Promise<VirtTypeResult> {
  let m = virtTypeMemo.get(conn);
  if (!m) virtTypeMemo.set(conn, (m = new Map()));
  const memo = m.get(arch);
  if (memo) return memo;
  const p = (async (): Promise<VirtTypeResult> => {
    const id = await hostIdentity(conn);
    const caps = readHostCache<string>('capabilities', id, opts);
    if (caps && typeof caps.value === 'string' && caps.value.includes('<capabilities')) {
      return { virtType: capsHaveDomainType(caps.value, arch, 'kvm') ? 'kvm' : 'qemu', from: 'capabilities-cache' };
    }
    const hit = readHostCache<Record<string, string>>('domcaps', id, opts);
    const known = hit?.value && typeof hit.value === 'object' ? hit.value[arch] : undefined;
    if (known === 'kvm' || known === 'qemu') return { virtType: known, from: 'domcaps-cache' };
    let virtType: string;
    try {
      virtType = (/<domain>([^<]+)<\/domain>/.exec(await conn.domainCapabilities({ arch })) ?? [])[1] ?? '';
    } catch {
      virtType = ''; // no emulator for that arch, or an old daemon: the full capabilities say
    }
    if (virtType !== 'kvm' && virtType !== 'qemu') {
      const xml = (await hostCapabilities(conn, opts)).xml;
      return { virtType: capsHaveDomainType(xml, arch, 'kvm') ? 'kvm' : 'qemu', from: 'domcaps' };
    }
    // merged with what another arch (or another vmctl) stored meanwhile
    const now = readHostCache<Record<string, string>>('domcaps', id, opts)?.value;
    writeHostCache('domcaps', id, { ...(now && typeof now === 'object' ? now : {}), [arch]: virtType }, opts);
    return { virtType, from: 'domcaps' };
  })();
  m.set(arch, p);
  p.catch(() => m.delete(arch));
  return p;
}

/**
 * virConnectCompareHypervisorCPU through the disk cache: the result for the same CPU definition
 * and arguments on the same host (identity) within HOST_IDENTITY_TTL_MS (a host's CPU can change
 * with a microcode update, which vmctl cannot see remotely). Only compatible results are kept:
 * an incompatible one is asked again every time.
 */
export async function compareHypervisorCpuCached(conn: Connection, cpuXml: string, o: { arch?: string; machine?: string; virttype?: string }, opts: CacheOptions = {}): Promise<{ result: number; fromCache: boolean }> {
  type Entries = Record<string, { result: number; at: number }>;
  const id = await hostIdentity(conn);
  const k = createHash('sha256').update(JSON.stringify({ cpuXml, ...o })).digest('hex').slice(0, 32);
  const now = (opts.now ?? Date.now)();
  const fresh = (): Entries => {
    const v = readHostCache<Entries>('cpu-compare', id, opts)?.value;
    if (!v || typeof v !== 'object') return {};
    // each entry has its own age: merging a new one must not refresh the others
    return Object.fromEntries(Object.entries(v).filter(([, e]) => e && typeof e.result === 'number' && now - e.at >= 0 && now - e.at <= (opts.ttlMs ?? HOST_IDENTITY_TTL_MS)));
  };
  const known = fresh()[k];
  if (known && known.result > 0) return { result: known.result, fromCache: true };
  const result = await conn.compareHypervisorCpu(cpuXml, o);
  if (result > 0) writeHostCache('cpu-compare', id, { ...fresh(), [k]: { result, at: now } }, opts);
  return { result, fromCache: false };
}
