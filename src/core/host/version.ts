/** Host-level facts: versions now; capabilities, KVM probing later. */
import type { Connection } from '../../libvirt/connection.js';
import { LIBVIRT_PROTOCOL_SOURCE_VERSION } from '../../libvirt/connection.js';
import { packageVersion } from '../package-root.js';

export interface Versions {
  uri: string;
  client: { vmctl: string; protocolFrom: string };
  libvirt: { version: string; number: number };
  hypervisor: { type: string; version: string; number: number };
  hostname: string;
}

export function vmctlVersion(): string {
  return packageVersion();
}

/** libvirt encodes versions as major * 1e6 + minor * 1e3 + micro */
export function formatLibvirtVersion(n: number | bigint): string {
  const v = Number(n);
  return `${Math.floor(v / 1e6)}.${Math.floor((v % 1e6) / 1e3)}.${v % 1e3}`;
}

export async function getVersions(conn: Connection): Promise<Versions> {
  const [lib, type, hv, hostname] = await Promise.all([
    conn.libVersion(),
    conn.hypervisorType(),
    conn.hypervisorVersion(),
    conn.hostname(),
  ]);
  return {
    uri: conn.uri.original,
    client: { vmctl: vmctlVersion(), protocolFrom: LIBVIRT_PROTOCOL_SOURCE_VERSION },
    libvirt: { version: formatLibvirtVersion(lib), number: lib },
    hypervisor: { type, version: formatLibvirtVersion(hv), number: hv },
    hostname,
  };
}
