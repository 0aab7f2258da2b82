/**
 * File names in a VM's client-side state dir (paths.ts vmStateDir), see cloudinit-keys.ts.
 * A module of their own, importing nothing: code that only needs the names (e.g. migrate moving
 * the state dir) must not load ssh2 at start-up.
 */
export const USER_KEY_FILE = 'id_ed25519';
export const HOST_KEY_FILE = 'ssh_host_ed25519_key';
export const KNOWN_HOSTS_FILE = 'known_hosts';
