/**
 * TLS transport (qemu+tls://host[:port]/system, and qemu://host/system),
 * default port 16514 (LIBVIRTD_TLS_PORT).
 *
 * Credentials are located like virNetTLSContextLocateCredentials
 * (src/rpc/virnettlscontext.c):
 *  - ?pkipath=DIR: DIR/cacert.pem, DIR/cacrl.pem, DIR/clientcert.pem,
 *    DIR/clientkey.pem, whether they exist or not;
 *  - non-root: ~/.pki/libvirt/ for each file that exists there (the
 *    cert/key as a pair), the system location for the rest;
 *  - root: /etc/pki/CA/cacert.pem, /etc/pki/CA/cacrl.pem,
 *    /etc/pki/libvirt/clientcert.pem, /etc/pki/libvirt/private/clientkey.pem.
 * The CA certificate is mandatory; the CRL is optional; a missing client
 * certificate+key pair is tolerated (the daemon may not ask for one).
 *
 * The server certificate is verified against that CA only (not the system
 * trust store) and against the host name; ?no_verify=1 skips just that
 * verification, like libvirt. After the handshake the daemon checks *our*
 * certificate and sends one '\1' byte when it accepts us
 * (virNetClientSetTLSSession); this transport waits for that byte.
 *
 * ?tls_priority (a GnuTLS priority string) has no OpenSSL equivalent and is
 * ignored.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { checkServerIdentity, connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { fail, timeoutOf, waitForSocket } from './common.js';
import { TransportError, abortError, errMessage, errnoCode } from './errors.js';
import { describeTcpError } from './tcp.js';
import type { ConnectedTransport, LibvirtUri, TransportOptions } from './types.js';
import { formatHostPort, uriFlag, uriHost, uriParam } from '../uri.js';

export const LIBVIRTD_TLS_PORT = 16514;

export const SYSTEM_PKI = {
  caCert: '/etc/pki/CA/cacert.pem',
  caCrl: '/etc/pki/CA/cacrl.pem',
  clientCert: '/etc/pki/libvirt/clientcert.pem',
  clientKey: '/etc/pki/libvirt/private/clientkey.pem',
} as const;

export interface TlsCredentialPaths {
  readonly caCert: string;
  readonly caCrl: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

export interface PkiHost {
  readonly euid: number;
  readonly home: string;
  exists(path: string): boolean;
}

export function realPkiHost(): PkiHost {
  return {
    euid: typeof process.geteuid === 'function' ? process.geteuid() : 0,
    home: homedir(),
    exists: (p) => existsSync(p),
  };
}

/** Where the CA, CRL, client certificate and key are looked for. */
export function locateTlsCredentials(pkipath: string | undefined, host: PkiHost = realPkiHost()): TlsCredentialPaths {
  if (pkipath !== undefined && pkipath !== '') {
    return {
      caCert: join(pkipath, 'cacert.pem'),
      caCrl: join(pkipath, 'cacrl.pem'),
      clientCert: join(pkipath, 'clientcert.pem'),
      clientKey: join(pkipath, 'clientkey.pem'),
    };
  }
  let caCert: string = SYSTEM_PKI.caCert;
  let caCrl: string = SYSTEM_PKI.caCrl;
  let clientCert: string = SYSTEM_PKI.clientCert;
  let clientKey: string = SYSTEM_PKI.clientKey;
  if (host.euid !== 0) {
    const user = join(host.home, '.pki', 'libvirt');
    const u = {
      caCert: join(user, 'cacert.pem'),
      caCrl: join(user, 'cacrl.pem'),
      clientCert: join(user, 'clientcert.pem'),
      clientKey: join(user, 'clientkey.pem'),
    };
    if (host.exists(u.caCert)) caCert = u.caCert;
    if (host.exists(u.caCrl)) caCrl = u.caCrl;
    if (host.exists(u.clientCert) && host.exists(u.clientKey)) {
      clientCert = u.clientCert;
      clientKey = u.clientKey;
    }
  }
  return { caCert, caCrl, clientCert, clientKey };
}

interface LoadedCredentials {
  ca: Buffer;
  crl?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

const PKI_FIX =
  'create the libvirt client PKI (CA certificate, client certificate and key), or point ?pkipath=DIR at a directory holding cacert.pem, clientcert.pem and clientkey.pem';

function readCredential(kind: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = errnoCode(err);
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : errMessage(err);
    throw fail('TLS_CREDENTIALS', `cannot read TLS ${kind} '${path}' (${why})`, PKI_FIX, err);
  }
}

export function loadTlsCredentials(paths: TlsCredentialPaths, exists: (p: string) => boolean = existsSync): LoadedCredentials {
  const out: LoadedCredentials = { ca: readCredential('CA certificate', paths.caCert) };
  if (exists(paths.caCrl)) out.crl = readCredential('CA revocation list', paths.caCrl);
  const haveCert = exists(paths.clientCert);
  const haveKey = exists(paths.clientKey);
  if (haveCert && !haveKey) {
    throw fail('TLS_CREDENTIALS', `TLS client certificate '${paths.clientCert}' has no private key at '${paths.clientKey}'`, PKI_FIX);
  }
  if (haveKey && !haveCert) {
    throw fail('TLS_CREDENTIALS', `TLS client key '${paths.clientKey}' has no certificate at '${paths.clientCert}'`, PKI_FIX);
  }
  if (haveCert && haveKey) {
    out.cert = readCredential('client certificate', paths.clientCert);
    out.key = readCredential('client key', paths.clientKey);
  }
  return out;
}

export interface TlsConnectParams {
  readonly host: string;
  readonly port: number;
  readonly credentials: TlsCredentialPaths;
  /** verify the server certificate (CA + host name); false = ?no_verify=1 */
  readonly verify: boolean;
}

const CA_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
]);

const NO_VERIFY_FIX = 'or, insecurely, add ?no_verify=1 to the URI to skip the check';

function describeTlsError(p: TlsConnectParams, err: Error, hadClientCert: boolean): TransportError {
  const where = formatHostPort(p.host, p.port);
  const code = errnoCode(err) ?? '';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return fail(
      'TLS_VERIFY',
      `server certificate of ${where} is not valid for host name '${p.host}': ${errMessage(err)}`,
      `connect using a name the certificate lists (subjectAltName), or fix the server certificate, ${NO_VERIFY_FIX}`,
      err,
    );
  }
  if (CA_CODES.has(code)) {
    return fail(
      'TLS_VERIFY',
      `server certificate of ${where} is not signed by the CA in ${p.credentials.caCert} (${code})`,
      `use the CA that signed the server certificate (?pkipath=DIR), ${NO_VERIFY_FIX}`,
      err,
    );
  }
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID' || code === 'CERT_REVOKED') {
    return fail('TLS_VERIFY', `server certificate of ${where} is not valid: ${code}`, `renew the server certificate, ${NO_VERIFY_FIX}`, err);
  }
  if (/alert|certificate required|bad certificate|unknown ca/i.test(err.message) || code.startsWith('ERR_SSL_')) {
    return serverRejected(p, hadClientCert, err);
  }
  return describeTcpError(p.host, p.port, err, 'tls');
}

function serverRejected(p: TlsConnectParams, hadClientCert: boolean, cause?: Error): TransportError {
  const where = formatHostPort(p.host, p.port);
  const detail = cause ? `: ${errMessage(cause)}` : '';
  return fail(
    'TLS_VERIFY',
    `libvirtd on ${where} rejected our TLS client certificate (or our IP address)${detail}`,
    hadClientCert
      ? `check that ${p.credentials.clientCert} is signed by the daemon's CA, valid for client use, and allowed by the daemon's tls_allowed_dn_list`
      : `no client certificate was found at ${p.credentials.clientCert} / ${p.credentials.clientKey}: create one signed by the daemon's CA, or use ?pkipath=DIR`,
    cause,
  );
}

/** Wait for the daemon's one-byte '\1' confirmation that it accepted our certificate. */
function awaitConfirmation(sock: TLSSocket, p: TlsConnectParams, hadClientCert: boolean, opts?: TransportOptions): Promise<void> {
  const timeoutMs = timeoutOf(opts);
  const signal = opts?.signal;
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (err: TransportError | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.off('readable', onReadable);
      sock.off('end', onEnd);
      sock.off('close', onEnd);
      sock.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
      if (err) {
        sock.destroy();
        reject(err);
      } else resolve();
    };
    const onReadable = (): void => {
      const b = sock.read(1) as Buffer | null;
      if (b === null) return;
      if (b.length === 1 && b[0] === 1) finish(null);
      else finish(serverRejected(p, hadClientCert, new Error(`unexpected confirmation byte 0x${b.toString('hex')}`)));
    };
    const onEnd = (): void => finish(serverRejected(p, hadClientCert));
    const onError = (err: Error): void => finish(describeTlsError(p, err, hadClientCert));
    const onAbort = (): void => finish(abortError(`connecting to ${formatHostPort(p.host, p.port)}`, signal!));
    const timer = setTimeout(
      () =>
        finish(
          fail(
            'TIMEOUT',
            `timed out after ${timeoutMs / 1000}s waiting for ${formatHostPort(p.host, p.port)} to confirm the TLS session`,
            'is this a libvirtd TLS port?',
          ),
        ),
      timeoutMs,
    );
    timer.unref?.();
    if (signal?.aborted) return onAbort();
    sock.on('readable', onReadable);
    sock.once('end', onEnd);
    sock.once('close', onEnd);
    sock.on('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
    onReadable();
  });
}

/** Connect with explicit credentials (unit-testable without a daemon). */
export async function connectTlsWith(p: TlsConnectParams, opts?: TransportOptions): Promise<ConnectedTransport> {
  const creds = loadTlsCredentials(p.credentials);
  const hadClientCert = creds.cert !== undefined;
  const options: ConnectionOptions = {
    host: p.host,
    port: p.port,
    ca: creds.ca,
    ...(creds.crl ? { crl: creds.crl } : {}),
    ...(creds.cert && creds.key ? { cert: creds.cert, key: creds.key } : {}),
    // SNI must not be an IP address
    ...(isIP(p.host) === 0 ? { servername: p.host } : {}),
    rejectUnauthorized: p.verify,
    checkServerIdentity: p.verify ? (_servername, cert) => checkServerIdentity(p.host, cert) : () => undefined,
  };
  const sock = tlsConnect(options);
  const where = formatHostPort(p.host, p.port);
  await waitForSocket(sock, 'secureConnect', where, opts, (err) => describeTlsError(p, err, hadClientCert));
  await awaitConfirmation(sock, p, hadClientCert, opts);
  sock.setNoDelay(true);
  sock.setKeepAlive(true, 30_000);
  return {
    stream: sock,
    description: `tls:${where}`,
    close: () => {
      sock.destroy();
    },
  };
}

export function connectTls(uri: LibvirtUri, opts?: TransportOptions): Promise<ConnectedTransport> {
  return connectTlsWith(
    {
      host: uriHost(uri),
      port: uri.port ?? LIBVIRTD_TLS_PORT,
      credentials: locateTlsCredentials(uriParam(uri, 'pkipath')),
      verify: !uriFlag(uri, 'no_verify'),
    },
    opts,
  );
}
