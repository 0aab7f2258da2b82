/**
 * User-mode port forwards of a VM: which one is SSH, the port range vmctl
 * picks from, picking a free port (locally) or a blind one (remote hosts), and
 * how this machine reaches a forward on the libvirt host.
 */
import { createServer } from 'node:net';
import { randomInt } from 'node:crypto';
import { VmctlError } from '../errors.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Connection } from '../../libvirt/connection.js';
import type { GuestTarget } from '../guest/ssh.js';

/** The guest's SSH forward: tcp to port 22 (the one vmctl picks a port for and connects through). */
export function isSshForward(f: { guestPort: number; proto: 'tcp' | 'udp' }): boolean {
  return f.guestPort === 22 && f.proto === 'tcp';
}

/**
 * The ports vmctl picks forwards from: by default below Linux's ephemeral
 * range (32768-60999), so the kernel does not hand the port to some outgoing
 * connection later. VMCTL_FORWARD_PORTS=LOW-HIGH changes it.
 */
export function forwardPortRange(env: NodeJS.ProcessEnv = process.env): { min: number; max: number } {
  const v = env.VMCTL_FORWARD_PORTS;
  if (v === undefined || v === '') return { min: 20000, max: 32767 };
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(v.trim());
  const min = Number(m?.[1]);
  const max = Number(m?.[2]);
  if (!m || min < 1024 || max > 65535 || min > max) {
    throw new VmctlError('INVALID_INPUT', `VMCTL_FORWARD_PORTS=${JSON.stringify(v)} is not a port range`, { hint: 'use LOW-HIGH within 1024-65535, e.g. 20000-32767' });
  }
  return { min, max };
}

/**
 * Ports for a user-mode forward, in the order to try: from a random start,
 * onwards through the range. On this machine only ones that are free now; on
 * a remote host vmctl cannot look, and QEMU refusing to start on a taken one
 * (isForwardPortTaken) makes create try the next.
 */
export function* forwardPortCandidates(): Generator<number> {
  const { min, max } = forwardPortRange();
  const n = max - min + 1;
  const first = randomInt(n);
  for (let i = 0; i < n; i++) yield min + ((first + i) % n);
}

export async function pickForwardPort(conn: Connection, candidates: Iterator<number>): Promise<number> {
  const local = conn.hostLoopback === 'local';
  for (let tries = 0; tries < 50; tries++) {
    const next = candidates.next();
    if (next.done) break;
    if (!local || (await loopbackPortFree(next.value))) return next.value;
  }
  const { min, max } = forwardPortRange();
  throw new VmctlError('RESOURCE', `no free port for the SSH forward on ${conn.uri.host ?? '127.0.0.1'} in ${min}-${max}`, {
    hint: 'set VMCTL_FORWARD_PORTS=LOW-HIGH to another range, or a fixed hostPort for the SSH forward in the template',
  });
}

function loopbackPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** QEMU's "Could not set up host forwarding rule 'tcp:127.0.0.1:P-:22'" at start */
export function isForwardPortTaken(e: unknown): boolean {
  return e instanceof LibvirtError && /could not set up host forwarding rule/i.test(e.message);
}

/**
 * How this machine reaches a guest's loopback forward on the libvirt host:
 * directly (local), through the connection's ssh session (qemu+ssh), or not at
 * all (qemu+tcp, qemu+tls: the forward listens on that host's loopback).
 */
export function tunnelFor(conn: Connection): Pick<GuestTarget, 'via'> {
  switch (conn.hostLoopback) {
    case 'local':
      return {};
    case 'tunnel':
      return { via: { name: conn.transport.description, open: (host, port) => conn.openTcp(host, port) } };
    case 'none':
      throw new VmctlError(
        'UNSUPPORTED',
        `a guest's SSH forward listens on the loopback of ${conn.uri.host ?? 'the libvirt host'}, which a ${conn.uri.transport} connection cannot reach`,
        { hint: `connect with qemu+ssh://${conn.uri.host ?? 'HOST'}/system instead (vmctl tunnels SSH through it), or use --wait ip` },
      );
  }
}

