/**
 * vmctl's own storage pool: a libvirt `dir` pool named `vmctl`.
 *
 *   qemu:///system (and every remote /system URI)  → /var/lib/vmctl/images
 *   qemu:///session (local)                        → $XDG_DATA_HOME/vmctl/images
 *                                                     (default ~/.local/share/vmctl/images)
 *
 * ensurePool() defines, builds, starts and autostarts it when it is missing,
 * starts it when it is defined but inactive, and otherwise leaves it alone.
 * Pools vmctl did not create are never modified; a pool named `vmctl` that is
 * not a dir pool is an error.
 */
import { statfsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { xmlBuilder as builder, xmlParser as parser } from '../xml.js';
import type { Connection, StoragePool } from '../../libvirt/connection.js';
import { LibvirtError } from '../../libvirt/errors.js';
import { VirStoragePoolBuildFlags, VirStoragePoolState } from '../../libvirt/generated/constants.gen.js';
import { VmctlError } from '../errors.js';

export const VMCTL_POOL = 'vmctl';
export const SYSTEM_POOL_PATH = '/var/lib/vmctl/images';


/** Where vmctl's pool lives for this connection. */
export function poolTargetPath(conn: Pick<Connection, 'uri'>, env: NodeJS.ProcessEnv = process.env): string {
  const path = conn.uri.path.replace(/\/+$/, '');
  if (path === '/session') {
    if (conn.uri.transport !== 'unix') {
      throw new VmctlError('UNSUPPORTED', `vmctl cannot choose a directory for its storage pool on a remote session daemon (${conn.uri.original})`, {
        hint: `define a dir pool named '${VMCTL_POOL}' there yourself, e.g. virsh -c '${conn.uri.original}' pool-define-as ${VMCTL_POOL} dir --target ~/.local/share/vmctl/images`,
      });
    }
    const xdg = env['XDG_DATA_HOME'];
    const base = xdg !== undefined && xdg.startsWith('/') ? xdg : join(env['HOME'] || homedir(), '.local', 'share');
    return join(base, 'vmctl', 'images');
  }
  return SYSTEM_POOL_PATH;
}

export function vmctlPoolXml(targetPath: string): string {
  return builder.build({
    pool: {
      '@_type': 'dir',
      name: VMCTL_POOL,
      target: { path: targetPath, permissions: { mode: '0711' } },
    },
  }) as string;
}

export interface PoolDescription {
  type: string;
  path?: string;
}

export function describePoolXml(xml: string): PoolDescription {
  const pool = (parser.parse(xml) as { pool?: { '@_type'?: string; target?: { path?: unknown } } }).pool;
  const path = pool?.target?.path;
  return { type: pool?.['@_type'] ?? 'unknown', ...(typeof path === 'string' ? { path } : {}) };
}

export interface EnsurePoolResult {
  pool: StoragePool;
  path: string;
  /** what ensurePool had to do: nothing, start it, or create it */
  action: 'none' | 'started' | 'created';
}

async function lookup(conn: Connection): Promise<StoragePool | undefined> {
  try {
    return await conn.lookupStoragePool(VMCTL_POOL);
  } catch (e) {
    if (e instanceof LibvirtError && e.isNotFound()) return undefined;
    throw e;
  }
}

/** vmctl's pool, or undefined when it is not defined (read-only: changes nothing). */
export async function findPool(conn: Connection): Promise<{ pool: StoragePool; description: PoolDescription; active: boolean; autostart: boolean } | undefined> {
  const pool = await lookup(conn);
  if (!pool) return undefined;
  const [xml, active, autostart] = await Promise.all([
    pool.xml(),
    pool.isActive(),
    pool.autostart(),
  ]);
  return { pool, description: describePoolXml(xml), active, autostart };
}

function notDirError(conn: Connection, type: string): VmctlError {
  return new VmctlError('CONFLICT', `a storage pool named '${VMCTL_POOL}' already exists on ${conn.uri.original} but it is a '${type}' pool, not a dir pool`, {
    hint: `vmctl needs '${VMCTL_POOL}' to be a dir pool; rename or remove the existing one (virsh pool-dumpxml ${VMCTL_POOL}) — vmctl will not change it`,
  });
}

/**
 * Makes sure vmctl's dir pool exists and is running (see the file comment).
 * Safe against a concurrent vmctl doing the same.
 */
export async function ensurePool(conn: Connection): Promise<EnsurePoolResult> {
  let action: EnsurePoolResult['action'] = 'none';
  let pool = await lookup(conn);
  if (!pool) {
    const target = poolTargetPath(conn);
    try {
      pool = await conn.defineStoragePool(vmctlPoolXml(target));
      action = 'created';
    } catch (e) {
      // another vmctl defined it meanwhile
      if (!(e instanceof LibvirtError && (e.isAlreadyExists() || /already exists/i.test(e.message)))) throw e;
      pool = await lookup(conn);
      if (!pool) throw e;
    }
    if (action === 'created') {
      try {
        // creates the target directory (and its parents) or fixes up an existing one's mode;
        // never deletes anything (NO_OVERWRITE would mean "format a device" to libvirt)
        await pool.build(VirStoragePoolBuildFlags.VIR_STORAGE_POOL_BUILD_NEW);
        await pool.start();
        await pool.setAutostart(true);
      } catch (e) {
        // leave nothing half-made behind
        try {
          if (await pool.isActive()) await pool.destroy();
          await pool.undefine();
        } catch {
          /* report the original error */
        }
        throw new VmctlError('LIBVIRT', `cannot set up storage pool '${VMCTL_POOL}' at ${target}: ${(e as Error).message}`, {
          hint: `check that libvirtd can create and write ${target}`,
          cause: e,
        });
      }
    }
  }
  const desc = describePoolXml(await pool.xml());
  if (desc.type !== 'dir') throw notDirError(conn, desc.type);
  if (action !== 'created' && !(await pool.isActive())) {
    try {
      await pool.start();
      action = 'started';
    } catch (e) {
      if (!(await pool.isActive())) {
        throw new VmctlError('LIBVIRT', `storage pool '${VMCTL_POOL}' is defined but cannot be started: ${(e as Error).message}`, {
          hint: `check its directory${desc.path ? ` ${desc.path}` : ''} (virsh pool-start ${VMCTL_POOL} shows the same error)`,
          cause: e,
        });
      }
    }
  }
  return { pool, path: desc.path ?? poolTargetPath(conn), action };
}

/**
 * Undo of an ensurePool() that created the pool: its definition goes again while it holds no
 * volume (a volume another command made in it meanwhile keeps it). The directory stays: it may
 * have been there before, and an empty directory is what the next ensurePool() reuses.
 * True when the pool was removed.
 */
export async function removePoolIfEmpty(conn: Connection): Promise<boolean> {
  const pool = await lookup(conn);
  if (!pool) return false;
  if (await pool.isActive()) {
    await pool.refresh().catch(() => undefined);
    if ((await pool.listVolumes()).length > 0) return false;
    await pool.destroy();
  }
  await pool.undefine();
  return true;
}

export interface PoolSpace {
  capacity: bigint;
  allocation: bigint;
  available: bigint;
}

/** Free bytes in a running pool (refreshed first, so the numbers are current). */
export async function poolSpace(pool: StoragePool): Promise<PoolSpace> {
  try {
    await pool.refresh();
  } catch {
    /* a refresh can collide with a running volume job: the last numbers will do */
  }
  const info = await pool.info();
  if (info.state !== VirStoragePoolState.VIR_STORAGE_POOL_RUNNING) {
    throw new VmctlError('CONFLICT', `storage pool '${pool.name}' is not running`, { hint: `virsh pool-start ${pool.name}` });
  }
  return { capacity: info.capacity, allocation: info.allocation, available: info.available };
}

/**
 * Bytes an unprivileged process (QEMU runs as the qemu user) can still write
 * on the filesystem of a local directory: statfs f_bavail. libvirt's pool
 * "available" is f_bfree, which also counts the blocks reserved for root —
 * on a filesystem with a large reserve that overstates the room for images.
 */
export function localAvailableBytes(path: string): bigint | undefined {
  try {
    const s = statfsSync(path, { bigint: true });
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

/**
 * Free bytes in vmctl's pool (or the given one): libvirt's figure, lowered to
 * what the qemu user can really use when the pool is on this machine.
 */
export async function poolFreeBytes(conn: Connection, pool?: StoragePool): Promise<bigint> {
  const p = pool ?? (await lookup(conn));
  if (!p) throw new VmctlError('NOT_FOUND', `storage pool '${VMCTL_POOL}' is not defined on ${conn.uri.original}`, { hint: 'vmctl creates it on first use' });
  const available = (await poolSpace(p)).available;
  if (conn.uri.transport !== 'unix') return available;
  const path = describePoolXml(await p.xml()).path;
  const local = path ? localAvailableBytes(path) : undefined;
  return local !== undefined && local < available ? local : available;
}

