/**
 * cloud-init for vmctl guests, part 2: the NoCloud seed documents (user-data,
 * meta-data, network-config).
 *
 * The base files in the package's cloud-init/ directory are loaded as YAML
 * objects, per-VM values are merged in as objects, and the result is emitted
 * with the yaml library — never by pasting strings. cloud-init parses with
 * PyYAML (YAML 1.1), so documents are read and written with the 1.1 schema,
 * and every string that is not obviously plain is double-quoted (PyYAML
 * resolves some plain scalars the yaml library does not, e.g. "=" and "<<").
 * user-data keeps "#cloud-config" as its first line. It holds the host private
 * key: SeedDocuments.userData is hidden from JSON, inspect and logs (redact.ts),
 * and so are the early seed files (cloudinit-early.ts) that repeat it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML, { visit, type Document } from 'yaml';
import { VmctlError } from '../errors.js';
import { HOSTNAME_RE, quote, USER_NAME_RE } from '../names.js';
import { packagePath } from '../package-root.js';
import { earlySeedFiles, type EarlySeedFile } from './cloudinit-early.js';
import { assertPublicKeys, keyPairFromPrivate, publicBlob, type SshKeyPair } from './cloudinit-keys.js';
import { withSecrets } from './redact.js';

/** The package's cloud-init/ directory, with a trailing slash (found from src/core, dist/core and dist/bundle). */
export const CLOUD_INIT_DIR = `${packagePath('cloud-init')}/`;

export interface SeedInput {
  /** guest hostname (meta-data local-hostname) */
  readonly hostname: string;
  /** meta-data instance-id (vmctl uses the domain UUID); a new one re-runs cloud-init's per-instance steps */
  readonly instanceId: string;
  /** login user (users[0].name) */
  readonly user: string;
  /** public key lines for users[0].ssh_authorized_keys */
  readonly authorizedKeys: readonly string[];
  /** the guest's host key pair (ssh_keys) */
  readonly hostKey: Pick<SshKeyPair, 'privateKey' | 'publicKey'>;
  /** Debian packages to install at first boot (appended to `packages`) */
  readonly packages?: readonly string[];
  /** commands for `runcmd` (appended): a string runs through sh, an array is an argv */
  readonly runcmd?: readonly (string | readonly string[])[];
  /**
   * more cloud-config, merged into the base before vmctl's values: maps merge
   * recursively, lists are appended, scalars replace. `ssh_keys` is refused
   * (vmctl owns the host key); extra `users` entries come after vmctl's user.
   */
  readonly extraUserData?: Record<string, unknown>;
  /** more network-config (version 2), merged like extraUserData: a lab's NICs with their static addresses */
  readonly extraNetworkConfig?: Record<string, unknown>;
  /** directory with user-data.yaml, meta-data.yaml, network-config.yaml (default CLOUD_INIT_DIR) */
  readonly baseDir?: string;
  /**
   * what QEMU's user-mode network will lease to the VM (domain-xml's userNetLease): the early
   * files then carry it for eth0, when the final network-config is DHCP (v4 only) on eth0
   */
  readonly userNetLease?: { readonly mac: string; readonly address: string; readonly prefixLength: number; readonly gateway: string };
}

export interface SeedDocuments {
  /** '#cloud-config\n…' — contains the host private key. Secret. */
  readonly userData: string;
  readonly metaData: string;
  readonly networkConfig: string;
  /** files for the seed's vmctl/ directory (cloudinit-early.ts); they hold the host private key. Secret. */
  readonly earlyFiles: readonly EarlySeedFile[];
}

/** Seed documents with userData and earlyFiles redacted in toJSON / util.inspect. */
export function seedDocuments(userData: string, metaData: string, networkConfig: string, earlyFiles: readonly EarlySeedFile[] = []): SeedDocuments {
  return withSecrets({ metaData, networkConfig }, { userData, earlyFiles: Object.freeze([...earlyFiles]) });
}

type Obj = Record<string, unknown>;

function isPlainObject(v: unknown): v is Obj {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/** Recursive merge: maps merge, lists append, anything else replaces. Inputs are not modified. */
export function mergeCloudConfig(base: Obj, extra: Obj): Obj {
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    const cur = out[k];
    if (isPlainObject(cur) && isPlainObject(v)) out[k] = mergeCloudConfig(cur, v);
    else if (Array.isArray(cur) && Array.isArray(v)) out[k] = [...(cur as unknown[]), ...(v as unknown[])];
    else out[k] = v;
  }
  return out;
}

const YAML_VERSION = '1.1' as const;

function loadBase(dir: string, file: string): Obj {
  const path = join(dir, file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new VmctlError('INTERNAL', `cannot read the cloud-init base file ${path}: ${(err as Error).message}`, {
      hint: 'the vmctl installation is incomplete (cloud-init/ is part of the package)',
      cause: err,
    });
  }
  let value: unknown;
  try {
    value = YAML.parse(text, { version: YAML_VERSION, prettyErrors: false });
  } catch (err) {
    throw new VmctlError('INTERNAL', `cloud-init base file ${path} is not valid YAML: ${(err as Error).message}`, { cause: err });
  }
  if (value === null || value === undefined) return {};
  if (!isPlainObject(value)) throw new VmctlError('INTERNAL', `cloud-init base file ${path} is not a YAML mapping`);
  return value;
}

/** Strings that are plain in every YAML version and in PyYAML's resolver; anything else gets double quotes. */
const SAFE_PLAIN_RE = /^[A-Za-z/_][A-Za-z0-9/_.@+-]*(?: [A-Za-z0-9/_.@+()=-][A-Za-z0-9/_.@+()=:-]*)*$/;

function quoteUnsafeStrings(doc: Document): void {
  visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value !== 'string') return;
      const s = node.value;
      // multi-line strings: the library picks a block literal when it is exact, quoting otherwise
      if (s.includes('\n')) return;
      // let the library still quote plain-looking 1.1 specials ('yes', 'null', '0755'…)
      if (!SAFE_PLAIN_RE.test(s) || s.endsWith(':') || s.endsWith('-')) node.type = 'QUOTE_DOUBLE';
    },
  });
}

/** Emit a value as YAML that PyYAML (cloud-init) reads back identically. */
export function toCloudYaml(value: unknown): string {
  const doc = new YAML.Document(value, {
    version: YAML_VERSION,
    aliasDuplicateObjects: false,
    // the 1.1 schema's merge tag would always print a '<<' string plain (a merge key to PyYAML)
    customTags: (tags) => tags.filter((t) => (typeof t === 'string' ? t !== 'merge' : t.tag !== 'tag:yaml.org,2002:merge')),
  });
  quoteUnsafeStrings(doc);
  return doc.toString({ lineWidth: 0, minContentWidth: 0, indentSeq: true });
}

const INSTANCE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]*(?:=[A-Za-z0-9.+~:-]+)?$/;

function checkString(what: string, s: unknown): string {
  if (typeof s !== 'string' || s.includes('\0')) throw new VmctlError('INVALID_INPUT', `${what} must be a string without NUL characters`);
  return s;
}

/** network-config v2 whose eth0 entry is exactly `dhcp4: true, dhcp6: false` (vmctl's base), matched by name */
function isDhcpOnlyEth0(nc: Obj): boolean {
  const eths = nc.ethernets;
  if (nc.version !== 2 || !isPlainObject(eths) || 'bonds' in nc || 'bridges' in nc || 'vlans' in nc) return false;
  const e = eths.eth0;
  // (no other entry renames a NIC to eth0)
  const renamed = Object.entries(eths).some(([k, v]) => k !== 'eth0' && (!isPlainObject(v) || v['set-name'] === 'eth0'));
  return !renamed && isPlainObject(e) && Object.keys(e).length === 2 && e.dhcp4 === true && e.dhcp6 === false;
}

/** Build the three NoCloud documents for one VM (throws INVALID_INPUT on bad values). */
export function buildSeedDocuments(input: SeedInput): SeedDocuments {
  const baseDir = input.baseDir ?? CLOUD_INIT_DIR;
  if (!HOSTNAME_RE.test(input.hostname)) {
    throw new VmctlError('INVALID_INPUT', `invalid hostname ${quote(input.hostname)}`, {
      hint: "use letters, digits and '-' (max 63), not starting or ending with '-'",
    });
  }
  if (!INSTANCE_ID_RE.test(input.instanceId)) {
    throw new VmctlError('INVALID_INPUT', `invalid cloud-init instance-id ${quote(input.instanceId)}`, {
      hint: "use letters, digits, '.', '_', ':' and '-' (a UUID is fine)",
    });
  }
  if (!USER_NAME_RE.test(input.user)) {
    throw new VmctlError('INVALID_INPUT', `invalid user name ${quote(input.user)}`, {
      hint: "lowercase letters, digits, '_' and '-', starting with a letter or '_' (max 32)",
    });
  }
  if (input.authorizedKeys.length === 0) {
    throw new VmctlError('INVALID_INPUT', 'no SSH public key for the guest user', { hint: 'nobody could log in' });
  }
  const authorizedKeys = assertPublicKeys(input.authorizedKeys);
  const host = keyPairFromPrivate(input.hostKey.privateKey, 'host private key');
  const givenPub = publicBlob(input.hostKey.publicKey);
  if (!givenPub || givenPub.blob.toString('base64') !== publicBlob(host.publicKey)!.blob.toString('base64')) {
    throw new VmctlError('INVALID_INPUT', 'the host public key does not belong to the host private key');
  }
  const packages = (input.packages ?? []).map((p) => {
    if (typeof p !== 'string' || !PACKAGE_RE.test(p)) throw new VmctlError('INVALID_INPUT', `invalid package name ${quote(String(p))}`);
    return p;
  });
  const runcmd = (input.runcmd ?? []).map((c, i) =>
    typeof c === 'string' ? checkString(`runcmd[${i}]`, c) : (Array.isArray(c) ? c : [c]).map((a) => checkString(`runcmd[${i}]`, a)),
  );
  const extra = input.extraUserData ?? {};
  if (!isPlainObject(extra)) throw new VmctlError('INVALID_INPUT', 'extra user-data must be a mapping');
  if ('ssh_keys' in extra) {
    throw new VmctlError('INVALID_INPUT', 'extra user-data must not set ssh_keys', {
      hint: 'vmctl injects the host key itself so it can pin it',
    });
  }
  if (extra.users !== undefined && !Array.isArray(extra.users)) throw new VmctlError('INVALID_INPUT', 'extra user-data: users must be a list');

  // user-data
  let ud = mergeCloudConfig(loadBase(baseDir, 'user-data.yaml'), extra);
  const users = Array.isArray(ud.users) ? [...(ud.users as unknown[])] : [];
  const first = isPlainObject(users[0]) ? { ...users[0] } : {};
  const baseName = first.name;
  first.name = input.user;
  if (first.gecos === undefined || first.gecos === baseName) first.gecos = input.user;
  first.ssh_authorized_keys = authorizedKeys;
  if (isPlainObject(users[0])) users[0] = first;
  else users.unshift(first);
  ud.users = users;
  const hostKey = { privateKey: host.privateKey, publicKey: input.hostKey.publicKey.trim() };
  ud.ssh_keys = { ed25519_private: hostKey.privateKey, ed25519_public: hostKey.publicKey };
  if (packages.length > 0) {
    const cur = Array.isArray(ud.packages) ? (ud.packages as unknown[]) : [];
    ud = { ...ud, packages: [...cur, ...packages.filter((p) => !cur.includes(p))] };
  }
  if (runcmd.length > 0) {
    const cur = Array.isArray(ud.runcmd) ? (ud.runcmd as unknown[]) : [];
    ud = { ...ud, runcmd: [...cur, ...runcmd] };
  }

  // meta-data
  const md = loadBase(baseDir, 'meta-data.yaml');
  md['instance-id'] = input.instanceId;
  md['local-hostname'] = input.hostname;

  // network-config
  let nc = loadBase(baseDir, 'network-config.yaml');
  if (input.extraNetworkConfig !== undefined) {
    if (!isPlainObject(input.extraNetworkConfig)) throw new VmctlError('INVALID_INPUT', 'extra network-config must be a mapping');
    nc = mergeCloudConfig(nc, input.extraNetworkConfig);
  }

  const lease = input.userNetLease && isDhcpOnlyEth0(nc) ? { iface: 'eth0', ...input.userNetLease } : undefined;
  const early = earlySeedFiles({ instanceId: input.instanceId, hostname: input.hostname, user: first, authorizedKeys, hostKey, ...(lease ? { network: lease } : {}) });
  return seedDocuments(`#cloud-config\n${toCloudYaml(ud)}`, toCloudYaml(md), toCloudYaml(nc), early);
}
