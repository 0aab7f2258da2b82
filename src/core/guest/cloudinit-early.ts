/**
 * cloud-init for vmctl guests, part 2b: the "early" seed files. Next to
 * user-data/meta-data/network-config, the seed carries a directory `vmctl/`
 * of small plain files that the tuned image's vmctl-seed-early.service (a
 * shell script, scripts/image/guest/vmctl-seed-early) applies before sshd
 * starts, so that sshd answers with the pinned host key and the user can log
 * in while cloud-init (ordered after sshd in that image) does the rest.
 *
 * The values are taken from the final user-data and meta-data, byte for byte
 * what cloud-init writes later (same host key bytes, same user, groups, shell,
 * comment, keys, hostname), so cloud-init finds the work done. The user's sudo
 * rules go to a bridge file (/etc/sudoers.d/80-vmctl-early) that the tuned
 * image removes once cloud-init has written its own. When users[0]
 * asks for something the shell script cannot reproduce exactly (a uid, a
 * password, a home directory, an unlocked password…), the user files are left
 * out and cloud-init creates the user as before. Images without the early unit
 * ignore the directory.
 *
 * `net` says what QEMU's user-mode network will lease to eth0 (address, gateway,
 * and the NIC's MAC), when network-config asks for exactly DHCP on eth0: the early
 * unit puts that address on the NIC before sshd starts, so a login works before
 * udev and systemd-networkd have processed the NIC (several seconds later under
 * TCG); networkd's DHCP then gets the same address and takes it over. The guest
 * applies it only when its eth0 has that MAC.
 */
import { HOSTNAME_RE, IPV4_RE, MAC_RE, USER_NAME_RE } from '../names.js';

/** Directory of the early files on the seed volume. */
export const EARLY_DIR = 'vmctl';

export interface EarlySeedFile {
  /** name inside EARLY_DIR */
  readonly name: string;
  readonly content: string;
  /** mode of the file in the ISO work directory (the guest installs it with its own modes) */
  readonly mode: number;
}

export interface EarlySeedInput {
  readonly instanceId: string;
  readonly hostname: string;
  /** users[0] of the final user-data */
  readonly user: Readonly<Record<string, unknown>>;
  readonly authorizedKeys: readonly string[];
  /** exactly what user-data's ssh_keys holds */
  readonly hostKey: { readonly privateKey: string; readonly publicKey: string };
  /** the lease eth0 will get (only when network-config is DHCP on eth0 and nothing else for it) */
  readonly network?: EarlyNetwork;
}

export interface EarlyNetwork {
  readonly iface: string;
  readonly mac: string;
  readonly address: string;
  readonly prefixLength: number;
  readonly gateway: string;
}

const IFACE_RE = /^[a-z][a-z0-9]{0,14}$/;

function networkFile(n: EarlyNetwork): EarlySeedFile {
  if (!IFACE_RE.test(n.iface) || !MAC_RE.test(n.mac) || !IPV4_RE.test(n.address) || !IPV4_RE.test(n.gateway) || !Number.isInteger(n.prefixLength) || n.prefixLength < 1 || n.prefixLength > 32) {
    throw new Error(`invalid early network ${JSON.stringify(n)}`);
  }
  return { name: 'net', content: `${n.iface} ${n.mac} ${n.address}/${n.prefixLength} ${n.gateway}\n`, mode: 0o600 };
}

/** users[0] keys the early script reproduces exactly; any other key leaves the user to cloud-init. */
const USER_KEYS = new Set(['name', 'gecos', 'groups', 'shell', 'sudo', 'lock_passwd', 'ssh_authorized_keys']);
const GROUP_RE = /^[A-Za-z0-9_-]{1,32}$/;
const GECOS_RE = /^[A-Za-z0-9 ._-]{0,64}$/;
const SHELL_RE = /^\/[A-Za-z0-9/._-]{1,127}$/;
/** a sudoers rule after the user name, as cloud-init writes it ("ALL=(ALL) NOPASSWD:ALL") */
const SUDO_RULE_RE = /^[A-Za-z0-9 ,:()=/_.*!+-]{1,256}$/;

function sudoRules(v: unknown): string[] | undefined {
  if (v === undefined || v === null || v === false) return [];
  const list = typeof v === 'string' ? [v] : Array.isArray(v) ? v : undefined;
  if (!list || !list.every((r): r is string => typeof r === 'string' && SUDO_RULE_RE.test(r))) return undefined;
  return list;
}

function groupList(v: unknown): string[] | undefined {
  if (v === undefined) return [];
  const list = typeof v === 'string' ? v.split(',').map((g) => g.trim()) : Array.isArray(v) ? v : undefined;
  if (!list || !list.every((g): g is string => typeof g === 'string' && GROUP_RE.test(g))) return undefined;
  return list;
}

/** The user files, or [] when users[0] needs cloud-init itself. */
function userFiles(user: Readonly<Record<string, unknown>>, authorizedKeys: readonly string[]): EarlySeedFile[] {
  const name = user.name;
  if (typeof name !== 'string' || !USER_NAME_RE.test(name)) return [];
  if (Object.keys(user).some((k) => !USER_KEYS.has(k))) return [];
  if (user.lock_passwd !== undefined && user.lock_passwd !== true) return [];
  const groups = groupList(user.groups);
  const sudo = sudoRules(user.sudo);
  const gecos = user.gecos ?? name;
  const shell = user.shell ?? '/bin/bash';
  if (!groups || !sudo || typeof gecos !== 'string' || !GECOS_RE.test(gecos) || typeof shell !== 'string' || !SHELL_RE.test(shell)) return [];
  const file = (n: string, content: string): EarlySeedFile => ({ name: n, content, mode: 0o600 });
  return [
    file('user', `${name}\n`),
    file('groups', `${groups.join(',')}\n`),
    file('shell', `${shell}\n`),
    file('gecos', `${gecos}\n`),
    file('authorized_keys', authorizedKeys.map((k) => `${k.trim()}\n`).join('')),
    ...(sudo.length > 0 ? [file('sudo', sudo.map((r) => `${r}\n`).join(''))] : []),
  ];
}

/** The files of EARLY_DIR for one VM. Holds the host private key: keep it secret. */
export function earlySeedFiles(input: EarlySeedInput): EarlySeedFile[] {
  const files: EarlySeedFile[] = [{ name: 'instance-id', content: `${input.instanceId}\n`, mode: 0o600 }];
  if (HOSTNAME_RE.test(input.hostname)) files.push({ name: 'hostname', content: `${input.hostname}\n`, mode: 0o600 });
  files.push(...userFiles(input.user, input.authorizedKeys));
  // the same bytes cloud-init's ssh module writes from ssh_keys later
  files.push({ name: 'ssh_host_ed25519_key', content: input.hostKey.privateKey, mode: 0o600 });
  files.push({ name: 'ssh_host_ed25519_key.pub', content: input.hostKey.publicKey, mode: 0o600 });
  if (input.network) files.push(networkFile(input.network));
  return files;
}
