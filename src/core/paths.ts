/**
 * Where vmctl keeps things on the client machine. Every location can be moved
 * with an environment variable (tests point them into the repo's gitignored
 * .cache so one built image is shared across runs).
 */
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { VmctlError } from './errors.js';

function xdg(envName: string, fallback: string, env: NodeJS.ProcessEnv): string {
  const v = env[envName];
  return v && v.startsWith('/') ? v : join(env.HOME || homedir(), fallback);
}

/** Built images, capability and probe caches: $VMCTL_CACHE_DIR, else $XDG_CACHE_HOME/vmctl (an absolute one), else ~/.cache/vmctl */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.VMCTL_CACHE_DIR || join(xdg('XDG_CACHE_HOME', '.cache', env), 'vmctl');
}

/** Per-VM client-side state (ssh keys, known_hosts): $VMCTL_DATA_DIR, else $XDG_DATA_HOME/vmctl */
export function dataDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.VMCTL_DATA_DIR || join(xdg('XDG_DATA_HOME', '.local/share', env), 'vmctl');
}

/** User templates: $XDG_CONFIG_HOME/vmctl/templates */
export function configDir(): string {
  return join(xdg('XDG_CONFIG_HOME', '.config', process.env), 'vmctl');
}

/** A short stable id for a connection URI, so state of VMs on different hosts never mixes. */
export function connectionId(uri: string): string {
  return createHash('sha256').update(uri).digest('hex').slice(0, 12);
}

/** Client-side directory of one VM on one connection. */
export function vmStateDir(uri: string, vmName: string): string {
  return join(dataDir(), 'vms', connectionId(uri), vmName);
}

/** Where `vmctl image build NAME` writes its output before importing it. */
export function builtImagePath(name: string): string {
  return join(cacheDir(), 'images', `${name}.qcow2`);
}

/**
 * Makes `dir` (and missing parents) owner-only (0700), tightening an existing
 * one that group or others could enter: everything vmctl keeps on the client
 * (keys, caches, built images, downloads) lives in such a directory.
 */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  if (!st.isDirectory()) throw new VmctlError('INVALID_INPUT', `${dir} is not a directory`);
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
}
