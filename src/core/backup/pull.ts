/**
 * Pull-mode backups (libvirt's NBD export of the point-in-time view) for a daemon on this machine:
 * QEMU serves each disk's view as of the job's start on a unix socket, copying blocks the guest
 * overwrites meanwhile into a thin scratch volume first; vmctl reads the data extents once, straight
 * into the backup set. Against push mode (the job copies every data block into a scratch volume,
 * which vmctl reads again) that is half the writes on the host and no scratch space the size of the
 * data. Used for backups of a running VM when vmctl runs as root next to the daemon (the socket
 * dir is made for QEMU's user): fulls read the data extents, incrementals the blocks the export's
 * dirty bitmap marks; remote hosts and everything else use push mode.
 */
import { mkdirSync, chownSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Connection, Domain } from '../../libvirt/connection.js';
import { isLocalConnection } from '../host/cache.js';
import type { OpContext } from '../op/context.js';
import { xmlParserWith } from '../xml.js';

/** Where the sockets are by default: one private directory per operation, owned by QEMU's user. */
export const NBD_ROOT = '/run/vmctl/nbd';

/** The directory holding the per-operation socket directories (VMCTL_NBD_DIR overrides it). */
export function nbdRoot(): string {
  const d = process.env['VMCTL_NBD_DIR'];
  return d && d.startsWith('/') ? d.replace(/\/+$/, '') : NBD_ROOT;
}

const parser = xmlParserWith((name) => name === 'seclabel');

/** QEMU's uid:gid for this domain, from the live definition's DAC label ("+64055:+64055"). */
export function qemuIds(liveXml: string): { uid: number; gid: number } | undefined {
  const doc = parser.parse(liveXml) as { domain?: { seclabel?: Array<Record<string, unknown>> } };
  for (const s of doc.domain?.seclabel ?? []) {
    if (s['@_model'] !== 'dac') continue;
    const m = /^\+?(\d+):\+?(\d+)$/.exec(String(s['label'] ?? '').trim());
    if (m) return { uid: Number(m[1]), gid: Number(m[2]) };
  }
  return undefined;
}

/**
 * The socket to export this backup on, or why the backup is pushed instead. Pull mode needs the
 * daemon on this machine (unix-socket connection) and a directory QEMU's user can create the socket
 * in and vmctl can connect to: made here, 0700, owned by that user (root may hand it over; another
 * user may only when QEMU runs as itself). VMCTL_BACKUP_VIA=push or =stream forces push mode.
 */
export function pullSocket(conn: Connection, liveXml: string, opId: string): { dir: string; socket: string } | { why: string } {
  const via = process.env['VMCTL_BACKUP_VIA'];
  if (via === 'push' || via === 'stream') return { why: `VMCTL_BACKUP_VIA=${via}` };
  if (!isLocalConnection(conn)) return { why: 'the daemon is not on this machine' };
  const ids = qemuIds(liveXml);
  if (!ids) return { why: 'the domain has no DAC label to give QEMU the socket directory' };
  const me = process.getuid?.() ?? -1;
  if (me !== 0 && me !== ids.uid) return { why: 'vmctl is not root: it cannot make a socket directory for QEMU\'s user' };
  const root = nbdRoot();
  const dir = join(root, opId);
  mkdirSync(root, { recursive: true, mode: 0o755 });
  mkdirSync(dir, { mode: 0o700 });
  if (me === 0) chownSync(dir, ids.uid, ids.gid);
  return { dir, socket: join(dir, 'nbd.sock') };
}

/** Remove a socket directory a backup made (only ever one under NBD_ROOT or VMCTL_NBD_DIR). */
export function removeSocketDir(conn: Connection, dir: string): void {
  if (!dir || !isLocalConnection(conn) || dir.includes('..') || ![NBD_ROOT, nbdRoot()].some((r) => dir.startsWith(`${r}/`))) return;
  rmSync(dir, { recursive: true, force: true });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** End a pull-mode job (the export closes, QEMU drops its scratch image) and wait until the domain has no job. */
export async function endPullJob(op: OpContext, dom: Domain): Promise<void> {
  await dom.abortJob();
  for (let i = 0; i < 200 && (await dom.jobStats()).type !== 'none'; i++) await sleep(25);
  if ((await dom.jobStats()).type !== 'none') op.warn(`${dom.name}: the backup job is still ending`);
}

const backupParser = xmlParserWith((name) => name === 'disk');

/** Each disk's dirty bitmap in a pull-mode incremental's export (target → name), from the job's backup XML. */
export function exportBitmaps(backupXml: string): Map<string, string> {
  const doc = backupParser.parse(backupXml) as { domainbackup?: { disks?: { disk?: Array<Record<string, unknown>> } } };
  const out = new Map<string, string>();
  for (const d of doc.domainbackup?.disks?.disk ?? []) {
    const name = d['@_name'];
    const bitmap = d['@_exportbitmap'];
    if (typeof name === 'string' && typeof bitmap === 'string' && bitmap) out.set(name, bitmap);
  }
  return out;
}
