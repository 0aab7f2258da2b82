/**
 * OpenSSH known_hosts parsing and host key matching (pure functions; the
 * only I/O helpers are readKnownHostsFile / appendKnownHost at the end).
 *
 * Supported: plain host names and comma lists, wildcard patterns (* and ?),
 * negated patterns (!pattern), "[host]:port" names for ports other than 22,
 * hashed names (|1|base64 salt|base64 HMAC-SHA1(salt, name)), @revoked
 * markers. @cert-authority lines are ignored (no certificate support).
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { appendFileSync, chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

export type KnownHostMarker = 'revoked' | 'cert-authority';

export type HostMatcher =
  | { readonly kind: 'patterns'; readonly patterns: readonly string[] }
  | { readonly kind: 'hashed'; readonly salt: Buffer; readonly hash: Buffer };

export interface KnownHostEntry {
  /** 1-based line number in the file */
  readonly line: number;
  readonly marker?: KnownHostMarker;
  readonly hosts: HostMatcher;
  /** key type as written, e.g. 'ssh-ed25519' */
  readonly keyType: string;
  /** the decoded public key blob (SSH wire format) */
  readonly key: Buffer;
  readonly comment?: string;
}

/** Parse the text of a known_hosts file; malformed lines are skipped. */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const out: KnownHostEntry[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const entry = parseKnownHostsLine(lines[i]!, i + 1);
    if (entry) out.push(entry);
  }
  return out;
}

export function parseKnownHostsLine(raw: string, lineNo = 1): KnownHostEntry | null {
  const line = raw.trim();
  if (line === '' || line.startsWith('#')) return null;
  const fields = line.split(/[ \t]+/);
  let marker: KnownHostMarker | undefined;
  if (fields[0]?.startsWith('@')) {
    const m = fields.shift()!;
    if (m === '@revoked') marker = 'revoked';
    else if (m === '@cert-authority') marker = 'cert-authority';
    else return null;
  }
  const [hostField, keyType, keyB64, ...rest] = fields;
  if (hostField === undefined || keyType === undefined || keyB64 === undefined) return null;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(keyB64)) return null;
  const key = Buffer.from(keyB64, 'base64');
  // the blob starts with its own key type; ignore lines where they disagree
  const blobType = keyTypeOfBlob(key);
  if (blobType === undefined || blobType !== keyType) return null;
  let hosts: HostMatcher;
  if (hostField.startsWith('|1|')) {
    const parts = hostField.split('|');
    if (parts.length !== 4) return null;
    const salt = Buffer.from(parts[2]!, 'base64');
    const hash = Buffer.from(parts[3]!, 'base64');
    if (salt.length !== 20 || hash.length !== 20) return null;
    hosts = { kind: 'hashed', salt, hash };
  } else if (hostField.startsWith('|')) {
    return null; // unknown hash format
  } else {
    hosts = { kind: 'patterns', patterns: hostField.split(',').filter((p) => p !== '') };
  }
  const entry: KnownHostEntry = {
    line: lineNo,
    ...(marker !== undefined ? { marker } : {}),
    hosts,
    keyType,
    key,
    ...(rest.length > 0 ? { comment: rest.join(' ') } : {}),
  };
  return entry;
}

/** The SSH wire-format key type at the start of a public key blob. */
export function keyTypeOfBlob(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const len = blob.readUInt32BE(0);
  if (len === 0 || len > 64 || 4 + len > blob.length) return undefined;
  const t = blob.subarray(4, 4 + len).toString('latin1');
  return /^[\x21-\x7e]+$/.test(t) ? t : undefined;
}

/** OpenSSH-style fingerprint: 'SHA256:' + unpadded base64 of sha256(blob). */
export function fingerprintSha256(blob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/** The name a host is recorded under: 'host' for port 22, '[host]:port' otherwise. */
export function knownHostsName(host: string, port = 22): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

/** '|1|salt|hmac' for a name (random salt unless given). */
export function hashKnownHostsName(name: string, salt: Buffer = randomBytes(20)): string {
  const hash = createHmac('sha1', salt).update(name).digest();
  return `|1|${salt.toString('base64')}|${hash.toString('base64')}`;
}

/** OpenSSH match_pattern: '*' and '?' wildcards, case-sensitive on an already lowercased name. */
export function matchPattern(name: string, pattern: string): boolean {
  let re = '^';
  for (const ch of pattern) {
    if (ch === '*') re += '.*';
    else if (ch === '?') re += '.';
    else re += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  re += '$';
  return new RegExp(re, 's').test(name);
}

/** Does this entry's host field cover `name` (as built by knownHostsName)? */
export function entryMatchesName(entry: KnownHostEntry, name: string): boolean {
  const h = entry.hosts;
  if (h.kind === 'hashed') {
    const got = createHmac('sha1', h.salt).update(name).digest();
    return got.equals(h.hash);
  }
  let positive = false;
  for (const p of h.patterns) {
    const negated = p.startsWith('!');
    const pat = (negated ? p.slice(1) : p).toLowerCase();
    if (matchPattern(name, pat)) {
      if (negated) return false;
      positive = true;
    }
  }
  return positive;
}

export type HostKeyStatus =
  /** a matching entry holds exactly this key */
  | 'known'
  /** no entry for this host at all */
  | 'unknown'
  /** entries exist for this host and key type, but with a different key */
  | 'mismatch'
  /** entries exist for this host, but only for other key types */
  | 'other-type'
  /** the key is marked @revoked for this host */
  | 'revoked';

export interface HostKeyCheck {
  readonly status: HostKeyStatus;
  /** host name looked up, e.g. '[127.0.0.1]:2222' */
  readonly name: string;
  readonly keyType: string;
  readonly fingerprint: string;
  /** the entry that decided the result (known / revoked), or the conflicting entries */
  readonly entries: readonly KnownHostEntry[];
}

/**
 * Check a presented host key blob against parsed known_hosts entries.
 * Precedence: revoked > known > mismatch > other-type > unknown.
 */
export function checkHostKey(entries: readonly KnownHostEntry[], host: string, port: number, key: Buffer): HostKeyCheck {
  const name = knownHostsName(host, port);
  const keyType = keyTypeOfBlob(key) ?? 'unknown-key-type';
  const fingerprint = fingerprintSha256(key);
  const base = { name, keyType, fingerprint };
  const forHost = entries.filter((e) => e.marker !== 'cert-authority' && entryMatchesName(e, name));
  const revoked = forHost.filter((e) => e.marker === 'revoked' && e.key.equals(key));
  if (revoked.length > 0) return { ...base, status: 'revoked', entries: revoked };
  const normal = forHost.filter((e) => e.marker === undefined);
  const exact = normal.filter((e) => e.key.equals(key));
  if (exact.length > 0) return { ...base, status: 'known', entries: exact };
  const sameType = normal.filter((e) => e.keyType === keyType);
  if (sameType.length > 0) return { ...base, status: 'mismatch', entries: sameType };
  if (normal.length > 0) return { ...base, status: 'other-type', entries: normal };
  return { ...base, status: 'unknown', entries: [] };
}

/** Host key algorithms (for ssh2's algorithms.serverHostKey) implied by a key type. */
export function hostKeyAlgorithmsForType(keyType: string): string[] {
  if (keyType === 'ssh-rsa') return ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];
  return [keyType];
}

/**
 * Order host key algorithms so that the types already known for this host
 * come first (as OpenSSH does), so a server with several host keys presents
 * the one we know.
 */
export function preferredHostKeyAlgorithms(
  entries: readonly KnownHostEntry[],
  host: string,
  port: number,
  supported: readonly string[],
): string[] {
  return preferredHostKeyAlgorithmsForName(entries, knownHostsName(host, port), supported);
}

/** preferredHostKeyAlgorithms for a known_hosts name ('host' or '[host]:port') that is already formed. */
export function preferredHostKeyAlgorithmsForName<A extends string>(entries: readonly KnownHostEntry[], name: string, supported: readonly A[]): A[] {
  const known: string[] = [];
  for (const e of entries) {
    if (e.marker !== undefined || !entryMatchesName(e, name)) continue;
    for (const a of hostKeyAlgorithmsForType(e.keyType)) if (!known.includes(a)) known.push(a);
  }
  const first = supported.filter((a) => known.includes(a));
  return [...first, ...supported.filter((a) => !first.includes(a))];
}

/** One known_hosts line for a key (hashed by default, like HashKnownHosts yes). */
export function formatKnownHostsLine(host: string, port: number, key: Buffer, opts: { hash?: boolean; salt?: Buffer } = {}): string {
  const name = knownHostsName(host, port);
  const keyType = keyTypeOfBlob(key);
  if (keyType === undefined) throw new Error('not an SSH public key blob');
  const hostField = opts.hash === false ? name : hashKnownHostsName(name, opts.salt);
  return `${hostField} ${keyType} ${key.toString('base64')}`;
}

// ---- file I/O ----

/** Read and parse a known_hosts file; a missing file is an empty list. */
export function readKnownHostsFile(path: string): KnownHostEntry[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return parseKnownHosts(text);
}

/** Append a line to a known_hosts file, creating it (0600) and its directory (0700) if needed. */
export function appendKnownHostsLine(path: string, line: string): void {
  const dir = dirname(path);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  let prefix = '';
  if (existsSync(path)) {
    const size = statSync(path).size;
    if (size > 0) {
      const buf = readFileSync(path);
      if (buf[buf.length - 1] !== 0x0a) prefix = '\n';
    }
    appendFileSync(path, `${prefix}${line}\n`);
  } else {
    appendFileSync(path, `${line}\n`, { mode: 0o600 });
    chmodSync(path, 0o600);
  }
}
