/**
 * Transport contract: every transport (unix, tcp, tls, ssh) yields a connected
 * byte stream. The RPC client (src/libvirt/rpc/client.ts) knows nothing else
 * about where the bytes go.
 */
import type { Duplex } from 'node:stream';

export type TransportKind = 'unix' | 'tcp' | 'tls' | 'ssh';

/** A parsed libvirt connection URI (see src/libvirt/uri.ts). */
export interface LibvirtUri {
  /** the URI exactly as given */
  readonly original: string;
  /** hypervisor driver: 'qemu', 'test', ... */
  readonly driver: string;
  readonly transport: TransportKind;
  readonly user?: string;
  readonly host?: string;
  readonly port?: number;
  /** '/system', '/session', '/default' ... */
  readonly path: string;
  /** query parameters, in order, already percent-decoded */
  readonly params: ReadonlyMap<string, string>;
  /**
   * The name sent to the daemon in REMOTE_PROC_CONNECT_OPEN: transport,
   * host, user and client-only parameters removed, as libvirt's remote
   * driver does (e.g. 'qemu+ssh://root@h/system?keyfile=k' -> 'qemu:///system').
   */
  readonly remoteName: string;
}

export interface TransportOptions {
  readonly signal?: AbortSignal;
  /** connect timeout in ms (default 30 000) */
  readonly timeoutMs?: number;
  /**
   * ssh: accept (and record in known_hosts) a host key that is not known yet.
   * A key that CONFLICTS with a known one is refused regardless.
   */
  readonly acceptUnknownHostKey?: boolean;
  /**
   * Use the daemon's read-only socket (libvirt-sock-ro / virtqemud-sock-ro),
   * as `virsh --readonly` does. unix and ssh transports only.
   */
  readonly readOnly?: boolean;
}

export interface ConnectedTransport {
  readonly stream: Duplex;
  /** human-readable endpoint for logs and errors, e.g. 'unix:/run/libvirt/libvirt-sock' */
  readonly description: string;
  /** tear down the stream and anything under it (ssh session, tls socket) */
  close(): void;
  /**
   * Things worth telling the user that are not errors, e.g. ssh: "Permanently
   * added [host]:2222 (ssh-ed25519 SHA256:...) to ~/.ssh/known_hosts".
   */
  readonly notices?: readonly string[];
  /**
   * Open a TCP connection FROM the libvirt host to host:port (ssh: a
   * direct-tcpip channel, like `ssh -L`). Only transports that can tunnel
   * have it; it is how vmctl reaches a guest's loopback port forward on a
   * remote host. Fails while/after the transport is closed.
   */
  openTcp?(host: string, port: number): Promise<Duplex>;
}
