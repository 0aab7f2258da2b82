/**
 * Where vmctl keeps things on the client machine. Every location can be moved
 * with an environment variable (tests point them into the repo's gitignored
 * .cache so one built image is shared across runs).
 */
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join } from 'node:path';

function xdg(envName: string, fallback: string): string {
  const v = process.env[envName];
  return v && v.startsWith('/') ? v : join(homedir(), fallback);
}

/** Built images, capability and probe caches: $VMCTL_CACHE_DIR, else $XDG_CACHE_HOME/vmctl */
export function cacheDir(): string {
  return process.env.VMCTL_CACHE_DIR || join(xdg('XDG_CACHE_HOME', '.cache'), 'vmctl');
}

/** Per-VM client-side state (ssh keys, known_hosts): $VMCTL_DATA_DIR, else $XDG_DATA_HOME/vmctl */
export function dataDir(): string {
  return process.env.VMCTL_DATA_DIR || join(xdg('XDG_DATA_HOME', '.local/share'), 'vmctl');
}

/** User templates: $XDG_CONFIG_HOME/vmctl/templates */
export function configDir(): string {
  return join(xdg('XDG_CONFIG_HOME', '.config'), 'vmctl');
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
