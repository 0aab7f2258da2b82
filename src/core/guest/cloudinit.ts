/**
 * cloud-init for vmctl guests: per-VM SSH keys on the client, the NoCloud seed
 * documents (user-data, meta-data, network-config) and the seed ISO.
 *
 * Keys. Every VM gets a fresh ed25519 *host* key pair that vmctl generates and
 * injects through user-data `ssh_keys`, so its public half can be pinned in a
 * per-VM known_hosts file before the guest ever boots: the first connection is
 * already strictly verified (no trust on first use). Unless the caller brings
 * its own public keys, vmctl also keeps a per-VM *user* key. Client-side state
 * of one VM (see paths.ts vmStateDir), a 0700 directory whose files are all 0600:
 *
 *   id_ed25519, id_ed25519.pub                  user key (only when vmctl manages it)
 *   ssh_host_ed25519_key, ssh_host_ed25519_key.pub   the guest's host key pair
 *   known_hosts                                 the host public key pinned for the address vmctl uses
 *
 * Documents. The base files in the package's cloud-init/ directory are loaded
 * as YAML objects, per-VM values are merged in as objects, and the result is
 * emitted with the yaml library — never by pasting strings. cloud-init parses
 * with PyYAML (YAML 1.1), so documents are read and written with the 1.1
 * schema, and every string that is not obviously plain is double-quoted
 * (PyYAML resolves some plain scalars the yaml library does not, e.g. "=" and
 * "<<"). user-data keeps "#cloud-config" as its first line.
 *
 * Secrets. The host private key only goes into user-data (and so the seed
 * ISO) and the state dir. In the objects holding it (SshKeyPair.privateKey,
 * SeedDocuments.userData) that property is non-enumerable and shown as
 * '[redacted]' by toJSON and util.inspect, so no logger or JSON output ever
 * prints it, at any depth (pino's own redaction of `privateKey`/`userData`
 * only covers fixed paths). Spreading such an object drops the secret.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  accessSync,
  chmodSync,
  constants as fsConstants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, delimiter, dirname, join } from 'node:path';
import { inspect } from 'node:util';
import ssh2 from 'ssh2';
import YAML, { visit, type Document } from 'yaml';
import { fingerprintSha256, parseKnownHostsLine } from '../../libvirt/transport/known-hosts.js';
import { VmctlError } from '../errors.js';
import { HOSTNAME_RE, quote, SSH_PUBLIC_KEY_RE, USER_NAME_RE } from '../names.js';
import { packagePath } from '../package-root.js';
import { ensurePrivateDir } from '../paths.js';

const { utils } = ssh2;

/** The package's cloud-init/ directory, with a trailing slash (found from src/core, dist/core and dist/bundle). */
export const CLOUD_INIT_DIR = `${packagePath('cloud-init')}/`;

export const USER_KEY_FILE = 'id_ed25519';
export const HOST_KEY_FILE = 'ssh_host_ed25519_key';
export const KNOWN_HOSTS_FILE = 'known_hosts';
/** NoCloud volume label */
export const SEED_LABEL = 'cidata';

const REDACTED = '[redacted]';

// ---------------------------------------------------------------------------
// keys

export interface SshKeyPair {
  readonly type: 'ed25519';
  /** OpenSSH private key ("-----BEGIN OPENSSH PRIVATE KEY-----…", trailing newline). Secret. */
  readonly privateKey: string;
  /** one public key line: 'ssh-ed25519 AAAA… comment' (no newline) */
  readonly publicKey: string;
  /** 'SHA256:…' as ssh-keygen -l shows it */
  readonly fingerprint: string;
}

function keyPair(privateKey: string, publicKey: string, fingerprint: string): SshKeyPair {
  const pair = { type: 'ed25519' as const, publicKey, fingerprint } as { type: 'ed25519'; privateKey: string; publicKey: string; fingerprint: string };
  // non-enumerable: serializers that ignore toJSON (pino with wildcard redaction does) never see it
  Object.defineProperty(pair, 'privateKey', { value: privateKey, enumerable: false });
  const safe = (): Record<string, string> => ({ type: pair.type, publicKey, fingerprint, privateKey: REDACTED });
  Object.defineProperty(pair, 'toJSON', { value: safe, enumerable: false });
  Object.defineProperty(pair, inspect.custom, { value: () => safe(), enumerable: false });
  return Object.freeze(pair);
}

function checkComment(comment: string): void {
  if (/[\r\n\0]/.test(comment)) throw new VmctlError('INVALID_INPUT', `key comment ${quote(comment)} contains a line break`);
}

/** The public blob of an SSH public key line ('type base64 [comment]'), or undefined. */
function publicBlob(line: string): { type: string; blob: Buffer } | undefined {
  const m = /^(\S+) ([A-Za-z0-9+/]+={0,3})(?: .*)?$/s.exec(line.trim());
  if (!m) return undefined;
  return { type: m[1]!, blob: Buffer.from(m[2]!, 'base64') };
}

function generateEd25519(comment: string): SshKeyPair {
  checkComment(comment);
  // ssh2 (1.17) writes an ed25519 public key whose first byte is 0 as 31 bytes
  // (leading zero dropped): about 1 key in 200 is malformed and unusable by
  // OpenSSH and by ssh2 itself. Check every key by parsing it back; draw again.
  for (let attempt = 0; attempt < 20; attempt++) {
    const k = utils.generateKeyPairSync('ed25519', comment === '' ? {} : { comment });
    const priv = k.private.endsWith('\n') ? k.private : `${k.private}\n`;
    const pub = k.public.trim();
    const parsed = utils.parseKey(priv);
    if (parsed instanceof Error || Array.isArray(parsed)) continue;
    const blob = publicBlob(pub)?.blob;
    if (!blob || !blob.equals(parsed.getPublicSSH())) continue;
    return keyPair(priv, pub, fingerprintSha256(blob));
  }
  throw new VmctlError('INTERNAL', 'could not generate a well-formed ed25519 key');
}

/** A fresh ed25519 key pair for a guest's sshd (OpenSSH format, as cloud-init's ssh_keys.ed25519_private wants). */
export function generateHostKey(comment: string): SshKeyPair {
  return generateEd25519(comment);
}

/** A fresh ed25519 login key pair (OpenSSH format, unencrypted). */
export function generateUserKey(comment: string): SshKeyPair {
  return generateEd25519(comment);
}

/** Parse an unencrypted OpenSSH/PEM ed25519 private key; the public line is derived from it. */
export function keyPairFromPrivate(privateKey: string, what = 'private key'): SshKeyPair {
  const parsed = utils.parseKey(privateKey);
  if (parsed instanceof Error || Array.isArray(parsed)) {
    throw new VmctlError('INVALID_INPUT', `${what} cannot be parsed${parsed instanceof Error ? `: ${parsed.message}` : ''}`);
  }
  if (!parsed.isPrivateKey()) throw new VmctlError('INVALID_INPUT', `${what} is a public key`);
  if (parsed.type !== 'ssh-ed25519') throw new VmctlError('INVALID_INPUT', `${what} is ${parsed.type}, expected ssh-ed25519`);
  const blob = parsed.getPublicSSH();
  const pub = `ssh-ed25519 ${blob.toString('base64')}${parsed.comment ? ` ${parsed.comment}` : ''}`;
  return keyPair(privateKey.endsWith('\n') ? privateKey : `${privateKey}\n`, pub, fingerprintSha256(blob));
}

/** Write a file under a temp name in the same directory, then rename over the target. */
function writeFileAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(tmp, data, { mode, flag: 'wx' });
    chmodSync(tmp, mode);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

export interface VmKeys {
  readonly stateDir: string;
  /** stateDir/id_ed25519 when vmctl manages the login key; undefined when the caller brought public keys */
  readonly userKeyFile?: string;
  /** the vmctl-managed login key pair (same condition as userKeyFile) */
  readonly userKey?: SshKeyPair;
  /** what goes into the guest user's authorized_keys */
  readonly authorizedKeys: readonly string[];
  /** the guest's new host key pair (also in stateDir/ssh_host_ed25519_key*) */
  readonly hostKey: SshKeyPair;
  /** stateDir/known_hosts */
  readonly knownHostsFile: string;
}

export interface EnsureVmKeysOptions {
  /** public key lines to authorize instead of a vmctl-managed key */
  readonly userPublicKeys?: readonly string[];
  /** key comments; default 'vmctl@<dir name>' and 'root@<dir name>' */
  readonly userKeyComment?: string;
  readonly hostKeyComment?: string;
  /** pin the new host key for these known_hosts names right away (else known_hosts is emptied until pinHostKey) */
  readonly hostPatterns?: readonly string[];
}

/** Check public key lines for authorized_keys (one key per string, no line breaks). */
export function assertPublicKeys(keys: readonly string[]): string[] {
  return keys.map((k) => {
    const line = typeof k === 'string' ? k.trim() : '';
    if (!SSH_PUBLIC_KEY_RE.test(line)) {
      throw new VmctlError('INVALID_INPUT', `not an SSH public key line: ${quote(String(k), 60)}`, {
        hint: "give the contents of a .pub file: 'ssh-ed25519 AAAA… comment'",
      });
    }
    return line;
  });
}

/**
 * Per-VM client-side key state. Reuses stateDir/id_ed25519 when it exists
 * (creates it otherwise) unless the caller gave public keys; always generates
 * a new host key pair (a new instance gets a new host key) and resets
 * known_hosts to pin only that key (for opts.hostPatterns, or nothing until
 * pinHostKey is called with the address vmctl will use).
 */
export function ensureVmKeys(stateDir: string, opts: EnsureVmKeysOptions = {}): VmKeys {
  ensurePrivateDir(stateDir);
  const label = basename(stateDir);
  let userKey: SshKeyPair | undefined;
  let userKeyFile: string | undefined;
  let authorizedKeys: string[];
  if (opts.userPublicKeys !== undefined && opts.userPublicKeys.length > 0) {
    authorizedKeys = assertPublicKeys(opts.userPublicKeys);
  } else {
    userKeyFile = join(stateDir, USER_KEY_FILE);
    if (existsSync(userKeyFile)) {
      userKey = keyPairFromPrivate(readFileSync(userKeyFile, 'utf8'), userKeyFile);
      if ((statSync(userKeyFile).mode & 0o077) !== 0) chmodSync(userKeyFile, 0o600);
    } else {
      userKey = generateUserKey(opts.userKeyComment ?? `vmctl@${label}`);
      writeFileAtomic(userKeyFile, userKey.privateKey, 0o600);
    }
    writeFileAtomic(`${userKeyFile}.pub`, `${userKey.publicKey}\n`, 0o600);
    authorizedKeys = [userKey.publicKey];
  }

  const hostKey = generateHostKey(opts.hostKeyComment ?? `root@${label}`);
  const hostKeyFile = join(stateDir, HOST_KEY_FILE);
  writeFileAtomic(hostKeyFile, hostKey.privateKey, 0o600);
  writeFileAtomic(`${hostKeyFile}.pub`, `${hostKey.publicKey}\n`, 0o600);

  const knownHostsFile = join(stateDir, KNOWN_HOSTS_FILE);
  writeFileAtomic(knownHostsFile, '', 0o600);
  for (const p of opts.hostPatterns ?? []) pinHostKey(stateDir, p, hostKey.publicKey);

  return {
    stateDir,
    ...(userKeyFile !== undefined ? { userKeyFile } : {}),
    ...(userKey !== undefined ? { userKey } : {}),
    authorizedKeys,
    hostKey,
    knownHostsFile,
  };
}

/** What an existing state dir holds (nothing is generated). */
export interface StoredVmKeys {
  readonly stateDir: string;
  readonly knownHostsFile: string;
  /** present when vmctl manages the login key */
  readonly userKeyFile?: string;
  /** the guest host public key line, when stored */
  readonly hostPublicKey?: string;
}

export function loadVmKeys(stateDir: string): StoredVmKeys {
  const userKeyFile = join(stateDir, USER_KEY_FILE);
  const hostPub = join(stateDir, `${HOST_KEY_FILE}.pub`);
  return {
    stateDir,
    knownHostsFile: join(stateDir, KNOWN_HOSTS_FILE),
    ...(existsSync(userKeyFile) ? { userKeyFile } : {}),
    ...(existsSync(hostPub) ? { hostPublicKey: readFileSync(hostPub, 'utf8').trim() } : {}),
  };
}

/** known_hosts name of an address: 'host' for port 22, '[host]:port' otherwise (e.g. '[127.0.0.1]:2222'). */
export function hostPatternFor(host: string, port: number): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

const HOST_PATTERN_RE = /^(?:\[[A-Za-z0-9.:_-]+\]:[0-9]{1,5}|[A-Za-z0-9.:_-]+)$/;

/**
 * Pin `publicKey` ('ssh-ed25519 AAAA…') for `hostPattern` ('[127.0.0.1]:PORT'
 * or a host name) in stateDir/known_hosts: lines for the same pattern are
 * replaced, other lines kept. Returns the file's path.
 */
export function pinHostKey(stateDir: string, hostPattern: string, publicKey: string): string {
  if (!HOST_PATTERN_RE.test(hostPattern)) {
    throw new VmctlError('INVALID_INPUT', `bad known_hosts host pattern ${quote(hostPattern)}`, {
      hint: "use 'host' or '[host]:port'",
    });
  }
  const pattern = hostPattern.toLowerCase();
  const key = publicBlob(publicKey);
  const line = key ? `${pattern} ${key.type} ${key.blob.toString('base64')}` : '';
  if (!key || !parseKnownHostsLine(line)) {
    throw new VmctlError('INVALID_INPUT', `not an SSH public key: ${quote(publicKey, 60)}`);
  }
  ensurePrivateDir(stateDir);
  const file = join(stateDir, KNOWN_HOSTS_FILE);
  const kept = existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '' && l.trim().split(/[ \t]+/)[0] !== pattern)
    : [];
  writeFileAtomic(file, [...kept, line].join('\n') + '\n', 0o600);
  return file;
}

// ---------------------------------------------------------------------------
// seed documents

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
  /** directory with user-data.yaml, meta-data.yaml, network-config.yaml (default CLOUD_INIT_DIR) */
  readonly baseDir?: string;
}

export interface SeedDocuments {
  /** '#cloud-config\n…' — contains the host private key. Secret. */
  readonly userData: string;
  readonly metaData: string;
  readonly networkConfig: string;
}

/** Seed documents with userData redacted in toJSON / util.inspect. */
export function seedDocuments(userData: string, metaData: string, networkConfig: string): SeedDocuments {
  const docs = { metaData, networkConfig } as { userData: string; metaData: string; networkConfig: string };
  // non-enumerable: serializers that ignore toJSON (pino with wildcard redaction does) never see it
  Object.defineProperty(docs, 'userData', { value: userData, enumerable: false });
  const safe = (): Record<string, string> => ({ userData: REDACTED, metaData, networkConfig });
  Object.defineProperty(docs, 'toJSON', { value: safe, enumerable: false });
  Object.defineProperty(docs, inspect.custom, { value: () => safe(), enumerable: false });
  return Object.freeze(docs);
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
  ud.ssh_keys = { ed25519_private: host.privateKey, ed25519_public: input.hostKey.publicKey.trim() };
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
  const nc = loadBase(baseDir, 'network-config.yaml');

  return seedDocuments(`#cloud-config\n${toCloudYaml(ud)}`, toCloudYaml(md), toCloudYaml(nc));
}

// ---------------------------------------------------------------------------
// seed ISO

export type IsoTool = 'genisoimage' | 'xorriso';

const ISO_PACKAGES: Record<IsoTool, string> = { genisoimage: 'genisoimage', xorriso: 'xorriso' };

/** Absolute path of an executable on PATH, or undefined. */
export function findExecutable(name: string, pathEnv: string = process.env.PATH ?? ''): string | undefined {
  for (const dir of pathEnv.split(delimiter)) {
    if (dir === '') continue;
    const p = join(dir, name);
    try {
      accessSync(p, fsConstants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface WriteSeedIsoOptions {
  /** force one tool (default: genisoimage, else xorriso) */
  readonly tool?: IsoTool;
  /** PATH to search (default process.env.PATH) */
  readonly pathEnv?: string;
  /** mode of the ISO (default 0600: it holds the host private key) */
  readonly mode?: number;
}

function run(file: string, args: string[]): Promise<{ stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { maxBuffer: 4 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } }, (err, _stdout, stderr) => {
      if (err) reject(Object.assign(err, { stderr: String(stderr) }));
      else resolve({ stderr: String(stderr) });
    });
  });
}

/**
 * Write a NoCloud seed ISO (volume label "cidata"; files user-data, meta-data,
 * network-config; Rock Ridge + Joliet names) to outFile, via a temp name in
 * the same directory and a rename. Nothing is left behind on failure.
 */
export async function writeSeedIso(
  docs: SeedDocuments,
  outFile: string,
  opts: WriteSeedIsoOptions = {},
): Promise<{ path: string; tool: IsoTool }> {
  const candidates: IsoTool[] = opts.tool ? [opts.tool] : ['genisoimage', 'xorriso'];
  let tool: IsoTool | undefined;
  let bin: string | undefined;
  for (const t of candidates) {
    bin = findExecutable(t, opts.pathEnv);
    if (bin) {
      tool = t;
      break;
    }
  }
  if (!tool || !bin) {
    const pkg = opts.tool ? ISO_PACKAGES[opts.tool] : 'genisoimage';
    throw new VmctlError('UNSUPPORTED', `cannot build the cloud-init seed ISO: ${candidates.join(' or ')} not found on PATH`, {
      hint: `install it: apt-get install ${pkg}`,
    });
  }

  const outDir = dirname(outFile);
  if (!existsSync(outDir)) mkdirSync(outDir, { recursive: true, mode: 0o700 });
  // a private work dir next to the target: same filesystem for the rename, never world-readable
  const work = mkdtempSync(join(outDir, `.${basename(outFile)}.`));
  try {
    chmodSync(work, 0o700);
    const files = [
      ['user-data', docs.userData],
      ['meta-data', docs.metaData],
      ['network-config', docs.networkConfig],
    ] as const;
    const paths = files.map(([name, text]) => {
      const p = join(work, name);
      writeFileSync(p, text, { mode: 0o600 });
      return p;
    });
    const iso = join(work, 'seed.iso');
    const common = ['-V', SEED_LABEL, '-J', '-r', '-o', iso, ...paths];
    const args = tool === 'genisoimage' ? ['-quiet', '-input-charset', 'utf-8', ...common] : ['-as', 'mkisofs', '-quiet', ...common];
    try {
      await run(bin, args);
    } catch (err) {
      const stderr = ((err as { stderr?: string }).stderr ?? '').trim();
      const tail = stderr.split('\n').slice(-3).join(' / ');
      const code = /no space left/i.test(stderr) ? 'RESOURCE' : 'INTERNAL';
      throw new VmctlError(code, `${tool} failed to write the seed ISO${tail ? `: ${tail}` : ''}`, {
        cause: err,
        ...(code === 'RESOURCE' ? { hint: `free some space in ${outDir}` } : {}),
      });
    }
    chmodSync(iso, opts.mode ?? 0o600);
    renameSync(iso, outFile);
    return { path: outFile, tool };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
