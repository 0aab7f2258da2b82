/**
 * Readiness of a booting guest: its addresses (DHCP lease, guest agent, ARP),
 * then sshd answering with the pinned host key, then cloud-init done. Phases
 * and what is being waited for go out as events of the operation.
 *
 * With an SSH forward, sshd is tried from the start, side by side with the
 * address sources: a guest whose sshd answers before its agent does (the
 * tuned image starts sshd before everything else) is asked for its address
 * over that verified connection (source 'ssh'), so neither phase waits for
 * the slower of the two.
 */
import { VmctlError } from '../errors.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Domain } from '../../libvirt/connection.js';
import { VirDomainInterfaceAddressesSource } from '../../libvirt/generated/constants.gen.js';
import { guestCapture, waitForSsh, waitForCloudInit, type GuestConnection, type GuestTarget } from '../guest/ssh.js';
import type { OpContext } from '../op/context.js';
import { userForwardGuestAddress } from './domain-xml.js';
import { SSHD_READY_MARKER, watchConsoleFor } from '../guest/console.js';

export type WaitTarget = 'none' | 'ip' | 'ssh';
export const PHASES = ['defined', 'started', 'ip', 'sshd', 'cloud-init'] as const;
export type Phase = (typeof PHASES)[number];

export interface PhaseEvent {
  phase: Phase;
  /** ms since the command started */
  atMs: number;
  detail?: string;
}

/** Records readiness phases (for the command's result) and emits each as an event. */
export function phaseRecorder(op: OpContext) {
  const phases: PhaseEvent[] = [];
  const phase = (p: Phase, detail?: string) => {
    phases.push({ phase: p, atMs: op.elapsedMs, ...(detail ? { detail } : {}) });
    op.phase(p, detail);
  };
  return { phases, phase };
}

export interface WaitOptions {
  target: 'ip' | 'ssh';
  ssh?: GuestTarget;
  timeoutMs: number;
  phase: (p: Phase, detail?: string) => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** how long one address source may take to answer (see guestAddresses) */
const AGENT_CALL_MS = 10_000;

/** The guest's addresses: DHCP lease, then guest agent, then ARP. */
/** The guest's global IPv4/IPv6 addresses as `ip -o addr` prints them, through an ssh connection. */
export async function addressesOverSsh(guest: GuestConnection, signal?: AbortSignal): Promise<string[]> {
  const r = await guestCapture(guest, 'ip -o addr show scope global', { timeoutMs: 30_000, ...(signal ? { signal } : {}) });
  if (r.code !== 0) return [];
  return parseIpAddrLines(r.stdout);
}

/** `ip -o addr` lines → addresses, IPv4 first (what the other sources report first too). */
export function parseIpAddrLines(text: string): string[] {
  const v4: string[] = [];
  const v6: string[] = [];
  for (const line of text.split('\n')) {
    const m = /\binet(6?) ([0-9a-fA-F.:]+)\//.exec(line);
    if (m) (m[1] ? v6 : v4).push(m[2]!);
  }
  return [...v4, ...v6];
}

/**
 * Each source is asked for at most AGENT_CALL_MS and given up on Ctrl-C (`signal`): a guest agent
 * that is connected but does not answer (mid-boot, frozen) would otherwise hold the wait forever.
 */
export async function guestAddresses(dom: Domain, signal?: AbortSignal): Promise<{ source: 'lease' | 'agent' | 'arp'; addrs: string[] } | undefined> {
  const S = VirDomainInterfaceAddressesSource;
  const sources: [number, 'lease' | 'agent' | 'arp'][] = [
    [S.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 'lease'],
    [S.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 'agent'],
    [S.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP, 'arp'],
  ];
  for (const [src, label] of sources) {
    try {
      const ifaces = await dom.interfaceAddresses(src, { timeoutMs: AGENT_CALL_MS, ...(signal ? { signal } : {}) });
      const addrs = ifaces
        .filter((i) => i.name !== 'lo')
        .flatMap((i) => i.addrs.map((a) => a.addr))
        .filter((a) => a !== '127.0.0.1' && a !== '::1' && !a.startsWith('fe80:'));
      if (addrs.length > 0) return { source: label, addrs };
    } catch (e) {
      // agent not up yet, no lease for user-mode NICs...: try the next source
      if (!(e instanceof LibvirtError)) throw e;
    }
  }
  return undefined;
}

export async function waitReady(op: OpContext, dom: Domain, o: WaitOptions): Promise<{ ip?: string }> {
  const deadline = op.t0 + o.timeoutMs;
  let last: Phase = 'started';
  const stalled = (what: string) =>
    new VmctlError('TIMEOUT', `VM ${dom.name} did not reach '${what}' within ${Math.round(o.timeoutMs / 1000)} s (last phase reached: '${last}')`, {
      hint: `watch it boot with vmctl console ${dom.name}; the VM is left running for inspection (vmctl delete ${dom.name} removes it)`,
    });
  const assertRunning = async () => {
    const s = await dom.state();
    if (s.state !== 'running') {
      throw new VmctlError('CONFLICT', `VM ${dom.name} stopped while booting (state: ${s.state})`, { hint: `look at vmctl console ${dom.name} and the QEMU log` });
    }
  };
  if (o.target === 'ssh' && !o.ssh) {
    throw new VmctlError('UNSUPPORTED', `cannot wait for ssh on ${dom.name}: it has no SSH port forward`, { hint: 'use --wait ip' });
  }
  const remaining = () => Math.max(1000, deadline - performance.now());
  // sshd, tried from the start (settled holds its outcome once there)
  const ssh = o.target === 'ssh' ? o.ssh : undefined;
  let settled: { guest: GuestConnection } | { error: unknown } | undefined;
  const sshStop = new AbortController();
  const stopSsh = () => sshStop.abort(op.signal.reason);
  op.signal.addEventListener('abort', stopSsh, { once: true });
  // vmctl's image says on the serial console when sshd is up: the wait then tries at once (a hint
  // only, see waitForSsh; no console, one in use by a user, or another image: the usual schedule)
  const consoleStop = new AbortController();
  let markerSeen = false;
  const readyHint = ssh
    ? watchConsoleFor(dom, SSHD_READY_MARKER, consoleStop.signal).then((seen) => {
        markerSeen = seen;
        if (seen) op.log.debug({ atMs: op.elapsedMs }, 'console: sshd ready');
        return seen;
      })
    : undefined;
  const sshWork = ssh
    ? waitForSsh(ssh, { timeoutMs: remaining(), signal: sshStop.signal, ...(readyHint ? { readyHint } : {}) })
        .then(
          (guest) => (settled = { guest }),
          (error: unknown) => (settled = { error }),
        )
        .finally(() => consoleStop.abort())
    : undefined;
  let guest: GuestConnection | undefined;
  let ip: string | undefined;
  try {
    // ip
    op.waiting(ssh ? `an IP address (DHCP lease, guest agent, ARP) and sshd on ${ssh.host}:${ssh.port}` : 'an IP address (DHCP lease, guest agent, ARP)');
    let forwardChecked = false; // the definition is read once, not every round
    while (!ip) {
      op.throwIfAborted();
      if (performance.now() > deadline) throw stalled('ip');
      if (!forwardChecked && settled && 'guest' in settled && ssh) {
        // logged in through a user-mode forward: the guest has the forward's address (no need to ask it)
        forwardChecked = true;
        const fwd = userForwardGuestAddress(await dom.xml(), ssh.port);
        if (fwd) {
          ip = fwd;
          o.phase('ip', `${ip} (user-mode forward)`);
          last = 'ip';
          break;
        }
      }
      const a = await guestAddresses(dom, op.signal);
      if (a) {
        ip = a.addrs[0];
        o.phase('ip', `${ip} (${a.source})`);
        last = 'ip';
        break;
      }
      if (settled && 'guest' in settled) {
        const addrs = await addressesOverSsh(settled.guest, op.signal);
        if (addrs.length > 0) {
          ip = addrs[0];
          o.phase('ip', `${ip} (ssh)`);
          last = 'ip';
          break;
        }
      }
      await assertRunning();
      // wake at once when sshd answers (its address is then read over that connection)
      await Promise.race([sleep(1000), ...(sshWork && !settled ? [sshWork] : [])]);
    }
    if (!ssh) return { ...(ip ? { ip } : {}) };
    // sshd
    op.waiting(`sshd on ${ssh.host}:${ssh.port} (pinned host key)`);
    await sshWork;
    const done = settled!;
    if ('error' in done) {
      const e = done.error;
      if (e instanceof VmctlError && e.code === 'TIMEOUT') throw stalled('sshd');
      throw e;
    }
    guest = done.guest;
    o.phase('sshd', `${ssh.host}:${ssh.port}${markerSeen ? ' (ready line on the console)' : ''}`);
    last = 'sshd';
  } finally {
    op.signal.removeEventListener('abort', stopSsh);
    if (!guest) {
      // ip failed or was interrupted: stop trying ssh and close a connection that made it
      sshStop.abort(new Error('not waiting for sshd any more'));
      void sshWork?.then(() => {
        if (settled && 'guest' in settled) settled.guest.close();
      });
    }
  }
  // cloud-init done
  op.waiting('cloud-init to finish');
  try {
    // Ctrl-C stops the wait at once (the undo of what was made follows), not when cloud-init ends
    const st = await waitForCloudInit(guest, { timeoutMs: remaining(), signal: op.signal });
    if (st.status !== 'done') {
      throw new VmctlError('LIBVIRT', `cloud-init on ${dom.name} ended with status '${st.status}'${st.errors.length ? `: ${st.errors.join('; ')}` : ''}`, {
        hint: `inspect with vmctl ssh ${dom.name} -- sudo cloud-init status --long`,
      });
    }
  } finally {
    guest.close();
  }
  o.phase('cloud-init');
  return { ...(ip ? { ip } : {}) };
}

