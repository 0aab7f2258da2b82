/**
 * Plain TCP transport (qemu+tcp://host[:port]/system), default port 16509
 * (LIBVIRTD_TCP_PORT). Unencrypted: the daemon normally insists on SASL here.
 */
import { createConnection } from 'node:net';
import { fail, waitForSocket } from './common.js';
import { TransportError, errMessage, errnoCode } from './errors.js';
import type { ConnectedTransport, LibvirtUri, TransportOptions } from './types.js';
import { formatHostPort, uriHost } from '../uri.js';

export const LIBVIRTD_TCP_PORT = 16509;

/** Translate a TCP connect failure into a one-line TransportError. */
export function describeTcpError(host: string, port: number, err: Error, kind: 'tcp' | 'tls' | 'ssh' = 'tcp'): TransportError {
  const where = formatHostPort(host, port);
  const code = errnoCode(err);
  const service = kind === 'ssh' ? 'sshd' : 'libvirtd';
  switch (code) {
    case 'ECONNREFUSED':
      return fail(
        'CONNECT_FAILED',
        `connection to ${where} refused`,
        kind === 'ssh'
          ? 'is sshd running there, on that port? check --connect'
          : `is libvirtd listening for ${kind.toUpperCase()} there? (listen_${kind}=1 and libvirtd --listen, or the libvirtd-${kind}.socket unit); check --connect`,
        err,
      );
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return fail('CONNECT_FAILED', `cannot resolve host name '${host}'`, 'check the host in --connect', err);
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
    case 'ENETDOWN':
      return fail('CONNECT_FAILED', `host ${where} is unreachable (${code})`, 'check the network and the host in --connect', err);
    case 'ETIMEDOUT':
      return fail('TIMEOUT', `timed out connecting to ${where}`, 'check that the host is reachable and no firewall drops the port', err);
    case 'ECONNRESET':
      return fail('CONNECT_FAILED', `connection to ${where} was reset`, `is ${service} running there?`, err);
    default:
      return fail('CONNECT_FAILED', `cannot connect to ${where}: ${errMessage(err)}`, undefined, err);
  }
}

export function tcpEndpoint(uri: LibvirtUri, defaultPort = LIBVIRTD_TCP_PORT): { host: string; port: number } {
  return { host: uriHost(uri), port: uri.port ?? defaultPort };
}

/** Connect to host:port over plain TCP. */
export async function connectTcpHostPort(host: string, port: number, opts?: TransportOptions): Promise<ConnectedTransport> {
  const sock = createConnection({ host, port });
  await waitForSocket(sock, 'connect', formatHostPort(host, port), opts, (err) => describeTcpError(host, port, err));
  sock.setNoDelay(true);
  sock.setKeepAlive(true, 30_000);
  return {
    stream: sock,
    description: `tcp:${formatHostPort(host, port)}`,
    close: () => {
      sock.destroy();
    },
  };
}

export function connectTcp(uri: LibvirtUri, opts?: TransportOptions): Promise<ConnectedTransport> {
  const { host, port } = tcpEndpoint(uri);
  return connectTcpHostPort(host, port, opts);
}
