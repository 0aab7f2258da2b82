/**
 * connectTransport(): open the byte stream a parsed libvirt URI points at.
 * The RPC client runs its protocol over the returned stream.
 */
import { InvalidUriError } from './errors.js';
import { connectTcp } from './tcp.js';
import { connectTls } from './tls.js';
import type { ConnectedTransport, LibvirtUri, TransportOptions } from './types.js';
import { connectUnix } from './unix.js';

export type { ConnectedTransport, LibvirtUri, TransportKind, TransportOptions } from './types.js';
export { HostKeyError, InvalidUriError, TransportError, type TransportErrorCode } from './errors.js';

export async function connectTransport(uri: LibvirtUri, opts: TransportOptions = {}): Promise<ConnectedTransport> {
  switch (uri.transport) {
    case 'unix':
      return connectUnix(uri, opts);
    case 'tcp':
      return connectTcp(uri, opts);
    case 'tls':
      return connectTls(uri, opts);
    case 'ssh':
      // ssh2 costs ~0.1 s to load: only for ssh URIs
      return (await import('./ssh.js')).connectSsh(uri, opts);
    default: {
      const t: never = uri.transport;
      throw new InvalidUriError(`unsupported transport '${String(t)}' in ${uri.original}`);
    }
  }
}
