/**
 * libvirt connection URIs, parsed the way libvirt does it.
 *
 * References (libvirt 9.0.0): src/util/viruri.c (virURIParse, query params),
 * src/libvirt.c (virConnectOpenInternal: default URI, "missing slash" check),
 * src/remote/remote_sockets.c (remoteSplitURIScheme: transports) and
 * src/remote/remote_driver.c (doRemoteOpen: client-only parameters stripped
 * from the name sent to the daemon).
 */
import { BlockList, isIP } from 'node:net';
import { InvalidUriError } from './transport/errors.js';
import type { LibvirtUri, TransportKind } from './transport/types.js';

export { InvalidUriError } from './transport/errors.js';

/** The URI used when neither --connect nor LIBVIRT_DEFAULT_URI is given. */
export const FALLBACK_URI = 'qemu:///system';

/**
 * Which URI to use: an explicit `--connect` value beats LIBVIRT_DEFAULT_URI,
 * which beats qemu:///system. Empty strings count as "not given" (as in
 * libvirt).
 */
export function defaultUri(explicit?: string | null, env: NodeJS.ProcessEnv = process.env): string {
  if (explicit !== undefined && explicit !== null && explicit !== '') return explicit;
  const fromEnv = env['LIBVIRT_DEFAULT_URI'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  return FALLBACK_URI;
}

/** defaultUri() then parseLibvirtUri() */
export function resolveLibvirtUri(explicit?: string | null, env: NodeJS.ProcessEnv = process.env): LibvirtUri {
  return parseLibvirtUri(defaultUri(explicit, env));
}

/**
 * Query parameters consumed by the client-side remote driver and never passed
 * to the daemon (remote_driver.c EXTRACT_URI_ARG_* plus 'authfile').
 * Matched case-insensitively, like libvirt's STRCASEEQ.
 */
export const CLIENT_ONLY_PARAMS: ReadonlySet<string> = new Set([
  'name',
  'command',
  'socket',
  'auth',
  'sshauth',
  'netcat',
  'keyfile',
  'pkipath',
  'known_hosts',
  'known_hosts_verify',
  'tls_priority',
  'mode',
  'proxy',
  'no_sanity',
  'no_verify',
  'no_tty',
  'authfile',
]);

/** Boolean-ish client params: libvirt requires an integer value (0 = false). */
const INT_PARAMS = ['no_sanity', 'no_verify', 'no_tty'] as const;

const TRANSPORTS: Readonly<Record<string, TransportKind | 'ext'>> = {
  tls: 'tls',
  unix: 'unix',
  ssh: 'ssh',
  // libvirt's libssh2 / libssh transports are served by the same ssh2-based code
  libssh2: 'ssh',
  libssh: 'ssh',
  ext: 'ext',
  tcp: 'tcp',
};

const ENUM_PARAMS: Readonly<Record<string, readonly string[]>> = {
  mode: ['auto', 'legacy', 'direct'],
  proxy: ['auto', 'netcat', 'native'],
  known_hosts_verify: ['normal', 'auto', 'ignore'],
};

const EXAMPLES = 'e.g. qemu:///system, qemu+ssh://user@host/system, qemu+tls://host/system';

/** Case-insensitive lookup of a query parameter (libvirt matches client params with STRCASEEQ). */
export function uriParam(uri: LibvirtUri, name: string): string | undefined {
  const direct = uri.params.get(name);
  if (direct !== undefined) return direct;
  const lower = name.toLowerCase();
  let found: string | undefined;
  for (const [k, v] of uri.params) if (k.toLowerCase() === lower) found = v;
  return found;
}

/** An integer flag parameter such as no_verify=1 (validated by the parser). */
export function uriFlag(uri: LibvirtUri, name: string): boolean {
  const v = uriParam(uri, name);
  return v !== undefined && Number.parseInt(v.trim(), 10) !== 0;
}

/** The host to connect to for network transports (libvirt defaults to localhost). */
export function uriHost(uri: LibvirtUri): string {
  return uri.host !== undefined && uri.host !== '' ? uri.host : 'localhost';
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/**
 * Whether traffic to `host` stays on this machine's loopback: localhost,
 * 127.0.0.0/8, ::1 (in any spelling, IPv4-mapped too). Any other name or
 * address may be another machine. Pure: no name is resolved.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost' || h === 'localhost.') return true;
  const family = isIP(h);
  return family !== 0 && LOOPBACK.check(h, family === 4 ? 'ipv4' : 'ipv6');
}

/**
 * The warning for a connection whose traffic crosses a network in clear
 * text, or undefined: qemu+tcp:// to a host other than loopback (libvirt's
 * tcp transport has no encryption, and vmctl speaks no SASL), so console
 * traffic and volume data (image uploads) are readable and changeable on the way.
 */
export function plaintextConnectionWarning(uri: LibvirtUri): string | undefined {
  if (uri.transport !== 'tcp') return undefined;
  const host = uriHost(uri);
  if (isLoopbackHost(host)) return undefined;
  const shown = formatHostPort(host);
  return (
    `${display(uri.original)} is not encrypted: console traffic, volume data (image uploads) and every other call ` +
    `cross the network to ${shown} in clear text; use ${uri.driver}+tls://${shown}${uri.path} or ${uri.driver}+ssh://USER@${shown}${uri.path}`
  );
}

/** Format a host for display, bracketing IPv6 literals. */
export function formatHostPort(host: string, port?: number): string {
  const h = host.includes(':') ? `[${host}]` : host;
  return port === undefined ? h : `${h}:${port}`;
}

interface RawUri {
  scheme: string;
  user?: string;
  host?: string;
  port?: number;
  path: string;
  query?: string;
  fragment?: string;
}

/** The URI as shown in messages: control characters escaped so the message stays one line. */
function display(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function invalid(s: string, why: string, hint = `use a libvirt URI, ${EXAMPLES}`): InvalidUriError {
  return new InvalidUriError(`invalid connection URI '${display(s)}': ${why}`, hint);
}

/** libxml2-style percent-decoding: %XX -> byte, everything else kept as is ('+' is not a space). */
export function percentDecode(s: string): string {
  if (!s.includes('%')) return s;
  const bytes: number[] = [];
  const enc = Buffer.from(s, 'utf8');
  for (let i = 0; i < enc.length; i++) {
    const c = enc[i]!;
    if (c === 0x25 && i + 2 < enc.length && isHex(enc[i + 1]) && isHex(enc[i + 2])) {
      bytes.push(Number.parseInt(String.fromCharCode(enc[i + 1]!, enc[i + 2]!), 16));
      i += 2;
    } else {
      bytes.push(c);
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

function isHex(c: number | undefined): boolean {
  return c !== undefined && ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66));
}

/** g_string_append_uri_escaped(str, NULL, FALSE): keep only RFC 3986 unreserved characters. */
function escapeParamValue(v: string): string {
  let out = '';
  for (const b of Buffer.from(v, 'utf8')) {
    const ch = String.fromCharCode(b);
    if (/[A-Za-z0-9\-._~]/.test(ch)) out += ch;
    else out += '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** libxml2 xmlSaveUri path escaping: keep unreserved, sub-delims and "/:@". */
function escapePath(p: string): string {
  let out = '';
  for (const b of Buffer.from(p, 'utf8')) {
    const ch = String.fromCharCode(b);
    if (/[A-Za-z0-9\-._~!$&'()*+,;=/:@]/.test(ch)) out += ch;
    else out += '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

function splitRaw(s: string): RawUri {
  // eslint-disable-next-line no-control-regex
  if (/[\s\x00-\x1f\x7f]/.test(s)) throw invalid(s, 'it contains whitespace or control characters');
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):(.*)$/s.exec(s);
  if (!m) {
    throw invalid(s, 'it does not include a driver name (scheme)');
  }
  const scheme = m[1]!;
  let rest = m[2]!;

  let fragment: string | undefined;
  const hashAt = rest.indexOf('#');
  if (hashAt >= 0) {
    fragment = rest.slice(hashAt + 1);
    rest = rest.slice(0, hashAt);
  }
  let query: string | undefined;
  const qAt = rest.indexOf('?');
  if (qAt >= 0) {
    query = rest.slice(qAt + 1);
    rest = rest.slice(0, qAt);
  }

  const raw: RawUri = { scheme, path: '' };
  if (query !== undefined) raw.query = query;
  if (fragment !== undefined) raw.fragment = fragment;

  if (rest.startsWith('//')) {
    rest = rest.slice(2);
    const slash = rest.indexOf('/');
    const authority = slash >= 0 ? rest.slice(0, slash) : rest;
    raw.path = slash >= 0 ? rest.slice(slash) : '';
    let hostport = authority;
    const at = authority.lastIndexOf('@');
    if (at >= 0) {
      raw.user = percentDecode(authority.slice(0, at));
      hostport = authority.slice(at + 1);
    }
    let host: string;
    let portStr: string | undefined;
    if (hostport.startsWith('[')) {
      const close = hostport.indexOf(']');
      if (close < 0) throw invalid(s, "unterminated '[' in the IPv6 host address");
      host = hostport.slice(1, close);
      const after = hostport.slice(close + 1);
      if (after !== '') {
        if (!after.startsWith(':')) throw invalid(s, `unexpected '${after}' after the IPv6 host address`);
        portStr = after.slice(1);
      }
      if (!/^[0-9A-Fa-f:.]+(%[A-Za-z0-9._~-]+)?$/.test(host) || !host.includes(':')) {
        throw invalid(s, `'[${host}]' is not an IPv6 address`);
      }
    } else {
      const colon = hostport.lastIndexOf(':');
      if (colon >= 0) {
        host = hostport.slice(0, colon);
        portStr = hostport.slice(colon + 1);
        if (host.includes(':')) throw invalid(s, 'IPv6 host addresses must be written in brackets, e.g. [::1]');
      } else {
        host = hostport;
      }
      host = percentDecode(host);
      if (/[/@[\]]/.test(host)) throw invalid(s, `'${host}' is not a valid host name`);
    }
    if (portStr !== undefined && portStr !== '') {
      if (!/^[0-9]+$/.test(portStr)) throw invalid(s, `port '${portStr}' is not a number`);
      const port = Number.parseInt(portStr, 10);
      if (port < 1 || port > 65535) throw invalid(s, `port ${portStr} is out of range (1-65535)`);
      if (host !== '') raw.port = port;
    }
    if (host !== '') raw.host = host;
  } else {
    raw.path = rest;
  }
  raw.path = percentDecode(raw.path);
  return raw;
}

interface Param {
  name: string;
  value: string;
}

/** virURIParseParams: '&' (or ';') separated name[=value]; "=value" sections ignored. */
function parseParams(query: string | undefined): Param[] {
  const out: Param[] = [];
  if (query === undefined || query === '') return out;
  for (const section of query.split(/[&;]/)) {
    if (section === '') continue;
    const eq = section.indexOf('=');
    if (eq === 0) continue;
    if (eq < 0) out.push({ name: percentDecode(section), value: '' });
    else out.push({ name: percentDecode(section.slice(0, eq)), value: percentDecode(section.slice(eq + 1)) });
  }
  return out;
}

/**
 * Parse a libvirt connection URI. Throws InvalidUriError (one line, with a
 * hint) for URIs libvirt would reject and for transports vmctl cannot serve.
 */
export function parseLibvirtUri(s: string): LibvirtUri {
  if (s === '') throw invalid(s, 'it is empty');
  const raw = splitRaw(s);

  const plus = raw.scheme.indexOf('+');
  const driver = plus >= 0 ? raw.scheme.slice(0, plus) : raw.scheme;
  if (driver === '') throw invalid(s, 'the driver name before "+" is empty');

  let transport: TransportKind;
  if (plus >= 0) {
    const t = raw.scheme.slice(plus + 1).toLowerCase();
    const kind = TRANSPORTS[t];
    if (kind === undefined) {
      throw invalid(s, `transport '${t}' not recognised (should be tls|unix|ssh|tcp|libssh2|libssh)`);
    }
    if (kind === 'ext') {
      throw invalid(s, "the 'ext' transport (external command) is not supported by vmctl", 'use qemu+ssh:// instead');
    }
    if (kind === 'unix' && raw.host !== undefined) {
      throw invalid(s, `using a unix socket with remote server '${raw.host}' is not supported`, `use qemu+ssh://${formatHostPort(raw.host)}${raw.path || '/system'} for a remote host`);
    }
    transport = kind;
  } else {
    transport = raw.host !== undefined ? 'tls' : 'unix';
  }

  // virConnectCheckURIMissingSlash
  if (raw.host !== undefined && ['qemu', 'vbox', 'vz'].includes(raw.scheme) && (raw.host === 'system' || raw.host === 'session')) {
    throw invalid(s, `maybe you want ${raw.scheme}:///${raw.host}`, `use ${raw.scheme}:///${raw.host} (three slashes)`);
  }

  const list = parseParams(raw.query);
  const params = new Map<string, string>();
  for (const p of list) params.set(p.name, p.value);

  let nameOverride: string | undefined;
  for (const p of list) {
    const lname = p.name.toLowerCase();
    if ((INT_PARAMS as readonly string[]).includes(lname)) {
      if (!/^\s*[-+]?[0-9]+$/.test(p.value)) {
        throw invalid(s, `failed to parse value of URI component ${p.name} ('${p.value}', expected an integer such as 1)`);
      }
    }
    const allowed = ENUM_PARAMS[lname];
    if (allowed !== undefined && !allowed.includes(p.value)) {
      throw invalid(s, `unknown ${lname} '${p.value}' (expected ${allowed.join('|')})`);
    }
    if (lname === 'name') nameOverride = p.value;
  }

  let remoteName: string;
  if (nameOverride !== undefined) {
    remoteName = nameOverride;
  } else if (raw.scheme === 'remote' || raw.scheme.startsWith('remote+')) {
    // let the daemon probe
    remoteName = '';
  } else {
    const passthrough = list.filter((p) => !CLIENT_ONLY_PARAMS.has(p.name.toLowerCase()));
    const q = passthrough.map((p) => `${p.name}=${escapeParamValue(p.value)}`).join('&');
    remoteName = `${driver}://${escapePath(raw.path)}${q !== '' ? `?${q}` : ''}${raw.fragment !== undefined ? `#${raw.fragment}` : ''}`;
  }

  const uri: LibvirtUri = {
    original: s,
    driver,
    transport,
    ...(raw.user !== undefined && raw.user !== '' ? { user: raw.user } : {}),
    ...(raw.host !== undefined ? { host: raw.host } : {}),
    ...(raw.port !== undefined ? { port: raw.port } : {}),
    path: raw.path,
    params,
    remoteName,
  };
  return uri;
}

/** Alias of defaultUri() (the name the CLI uses). */
export const resolveDefaultUri = defaultUri;
