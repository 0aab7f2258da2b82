/**
 * cloud-init for vmctl guests, part 1: per-VM SSH keys on the client.
 *
 * Every VM gets a fresh ed25519 *host* key pair that vmctl generates and
 * injects through user-data `ssh_keys`, so its public half can be pinned in a
 * per-VM known_hosts file before the guest ever boots: the first connection is
 * already strictly verified (no trust on first use). Unless the caller brings
 * its own public keys, vmctl also keeps a per-VM *user* key. Client-side state
 * of one VM (see paths.ts vmStateDir):
 *
 *   id_ed25519, id_ed25519.pub                  user key (only when vmctl manages it), 0600
 *   ssh_host_ed25519_key, ssh_host_ed25519_key.pub   the guest's host key pair, 0600
 *   known_hosts                                 the host public key pinned for the address vmctl uses, 0600
 *
 * The private keys are hidden from JSON, inspect and logs (redact.ts).
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import ssh2 from 'ssh2';
import { fingerprintSha256, knownHostsName, parseKnownHostsLine } from '../../libvirt/transport/known-hosts.js';
import { VmctlError } from '../errors.js';
import { ensurePrivateDir } from '../paths.js';
import { quote, SSH_PUBLIC_KEY_RE } from '../names.js';
import { withSecret } from './redact.js';
import { HOST_KEY_FILE, KNOWN_HOSTS_FILE, USER_KEY_FILE } from './state-files.js';

const { utils } = ssh2;

export { HOST_KEY_FILE, KNOWN_HOSTS_FILE, USER_KEY_FILE };

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
  return withSecret({ type: 'ed25519' as const, publicKey, fingerprint }, 'privateKey', privateKey);
}

function checkComment(comment: string): void {
  if (/[\r\n\0]/.test(comment)) throw new VmctlError('INVALID_INPUT', `key comment ${quote(comment)} contains a line break`);
}

/** The public blob of an SSH public key line ('type base64 [comment]'), or undefined. */
export function publicBlob(line: string): { type: string; blob: Buffer } | undefined {
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
  return knownHostsName(host, port);
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
