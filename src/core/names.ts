/**
 * Names and paths that users type and that end up in libvirt XML, volume file
 * names, QEMU option strings, hostnames and cloud-init: every one is checked
 * here against a conservative pattern, so nothing downstream has to escape
 * quotes, slashes, commas or whitespace it should never have seen.
 *
 * Each kind has a `check…()` returning the problem as a short phrase (or null)
 * for validators that collect problems, and an `assert…()` that throws
 * VmctlError('INVALID_INPUT') with the fix in the message.
 */
import path from 'node:path';
import { VmctlError } from './errors.js';

/** Show a user string safely in a message: quoted, control characters escaped, long values cut. */
export function quote(value: string, max = 80): string {
  const cut = [...value].length > max ? [...value].slice(0, max).join('') + '…' : value;
  return JSON.stringify(cut);
}

interface NameRule {
  readonly what: string;
  readonly re: RegExp;
  readonly rule: string;
}

/**
 * VM names: lowercase letters, digits and '-', starting with a letter, not
 * ending with '-', at most 63 characters. They become the guest's hostname
 * (one DNS label: no '_' or '.', case-insensitive, hence lowercase only) and
 * the prefix of the VM's volume names.
 */
export const VM_NAME_RE = /^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const VM_NAME: NameRule = {
  what: 'VM name',
  re: VM_NAME_RE,
  rule: "use lowercase letters, digits and '-' (max 63), starting with a letter and not ending with '-'",
};

/** Base image names (a volume in the images pool): "debian-12", "alpine-3.19.qcow2", "ubuntu_22.04". */
export const IMAGE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;
const IMAGE_NAME: NameRule = {
  what: 'image name',
  re: IMAGE_NAME_RE,
  rule: "use letters, digits, '.', '_', '+' and '-' (max 128), starting with a letter or digit",
};

/** Template names map to `<name>.yaml` in the template directories. */
export const TEMPLATE_NAME_RE = /^[a-z0-9](?:[a-z0-9._-]{0,62})$/;
const TEMPLATE_NAME: NameRule = {
  what: 'template name',
  re: TEMPLATE_NAME_RE,
  rule: "use lowercase letters, digits, '.', '_' and '-' (max 63), starting with a letter or digit",
};

/** Disk names inside a template ("root", "data"); they become part of volume names. */
export const DISK_NAME_RE = /^[a-z][a-z0-9-]{0,30}$/;
const DISK_NAME: NameRule = {
  what: 'disk name',
  re: DISK_NAME_RE,
  rule: "use lowercase letters, digits and '-' (max 31), starting with a letter",
};

/** libvirt network names (no '/' — libvirt refuses it — nor anything that needs quoting). */
export const NETWORK_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const NETWORK_NAME: NameRule = {
  what: 'network name',
  re: NETWORK_NAME_RE,
  rule: "use letters, digits, '.', '_' and '-' (max 64), starting with a letter or digit",
};

/** Linux interface names: at most 15 bytes, no '/', ':' or whitespace. */
export const BRIDGE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$/;
const BRIDGE_NAME: NameRule = {
  what: 'bridge name',
  re: BRIDGE_NAME_RE,
  rule: "use letters, digits, '.', '_' and '-' (max 15, a Linux interface name)",
};

/** Snapshot names: part of file names of external snapshots (NAME-vda.SNAP.qcow2). */
export const SNAPSHOT_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
const SNAPSHOT_NAME: NameRule = {
  what: 'snapshot name',
  re: SNAPSHOT_NAME_RE,
  rule: "use letters, digits, '_' and '-' (max 63), starting with a letter or digit",
};

/** Pool names. */
export const POOL_NAME_RE = NETWORK_NAME_RE;

/** A dotted-quad IPv4 address (no leading zeros); the source is reused in JSON schemas. */
export const IPV4_RE = /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/;
/** A MAC address as libvirt and the kernel print it (lowercase, colon-separated). */
export const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const POOL_NAME: NameRule = { ...NETWORK_NAME, what: 'pool name' };

function check(rule: NameRule, value: unknown): string | null {
  if (typeof value !== 'string') return `${rule.what} must be a string`;
  if (value.length === 0) return `empty ${rule.what}: ${rule.rule}`;
  if (value === '.' || value === '..' || !rule.re.test(value)) return `invalid ${rule.what} ${quote(value)}: ${rule.rule}`;
  return null;
}

function assert(rule: NameRule, value: unknown): string {
  const problem = check(rule, value);
  if (problem !== null) throw new VmctlError('INVALID_INPUT', problem);
  return value as string;
}

export const checkVmName = (v: unknown): string | null => check(VM_NAME, v);
export const assertVmName = (v: unknown): string => assert(VM_NAME, v);
export const checkImageName = (v: unknown): string | null => check(IMAGE_NAME, v);
export const assertImageName = (v: unknown): string => assert(IMAGE_NAME, v);
export const checkTemplateName = (v: unknown): string | null => check(TEMPLATE_NAME, v);
export const assertTemplateName = (v: unknown): string => assert(TEMPLATE_NAME, v);
export const checkDiskName = (v: unknown): string | null => check(DISK_NAME, v);
export const assertDiskName = (v: unknown): string => assert(DISK_NAME, v);
export const checkNetworkName = (v: unknown): string | null => check(NETWORK_NAME, v);
export const assertNetworkName = (v: unknown): string => assert(NETWORK_NAME, v);
export const checkBridgeName = (v: unknown): string | null => check(BRIDGE_NAME, v);
export const assertBridgeName = (v: unknown): string => assert(BRIDGE_NAME, v);
export const assertSnapshotName = (v: unknown): string => assert(SNAPSHOT_NAME, v);
export const checkPoolName = (v: unknown): string | null => check(POOL_NAME, v);
export const assertPoolName = (v: unknown): string => assert(POOL_NAME, v);

/** Characters that XML 1.0 cannot carry at all (escaping does not help), plus lone surrogates. */
// eslint-disable-next-line no-control-regex
export const XML_ILLEGAL_RE = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001F\u007F]/;

export interface UserPathOptions {
  /** what the path is, for messages: "--ssh-key", "kernel" */
  readonly label?: string;
  /** relative paths are resolved against this directory (default: process.cwd()) */
  readonly base?: string;
  /** the result must lie inside this directory (after resolving '..') */
  readonly root?: string;
  /** refuse relative paths instead of resolving them */
  readonly mustBeAbsolute?: boolean;
}

/** The problem with a user-given path, or null. Lexical only: symlinks are the caller's business. */
export function checkUserPath(input: unknown, opts: UserPathOptions = {}): string | null {
  const label = opts.label ?? 'path';
  if (typeof input !== 'string') return `${label} must be a string`;
  if (input.length === 0) return `empty ${label}: give a file path`;
  if (input.includes('\0')) return `invalid ${label} ${quote(input)}: contains a NUL byte`;
  if (CONTROL_RE.test(input)) return `invalid ${label} ${quote(input)}: contains control characters (newline, tab…)`;
  if (XML_ILLEGAL_RE.test(input)) return `invalid ${label} ${quote(input)}: contains characters that are not valid text`;
  if (input.length > 4095) return `invalid ${label}: longer than 4095 characters`;
  if (opts.mustBeAbsolute && !path.isAbsolute(input)) return `invalid ${label} ${quote(input)}: must be an absolute path`;
  if (opts.root !== undefined) {
    const root = path.resolve(opts.root);
    const resolved = path.resolve(opts.base ?? process.cwd(), input);
    const rel = path.relative(root, resolved);
    if (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
      return `invalid ${label} ${quote(input)}: must stay inside ${root}`;
    }
  }
  return null;
}

/** Resolve a user-given path (against `base`, default cwd) after checking it; throws INVALID_INPUT. */
export function resolveUserPath(input: unknown, opts: UserPathOptions = {}): string {
  const problem = checkUserPath(input, opts);
  if (problem !== null) throw new VmctlError('INVALID_INPUT', problem);
  return path.resolve(opts.base ?? process.cwd(), input as string);
}

/** Hostname (one label, RFC 1123) as cloud-init sets it. */
export const HOSTNAME_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** Linux user names as Debian's adduser accepts them by default. */
export const USER_NAME_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

/** One OpenSSH public key line: type, base64 blob, optional comment (no newlines). */
export const SSH_PUBLIC_KEY_RE =
  /^(?:ssh-(?:rsa|ed25519|dss)|ecdsa-sha2-nistp(?:256|384|521)|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+={0,3}(?: [^\r\n\0]*)?$/;
