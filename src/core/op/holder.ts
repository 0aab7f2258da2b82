/**
 * Who runs an operation: user, machine, process — recorded in leases and
 * intent markers so another vmctl can tell whether that process still lives.
 */
import { readFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';

export interface Holder {
  user: string;
  host: string;
  pid: number;
  /** /proc/sys/kernel/random/boot_id: tells a reboot (pid reused) apart */
  bootId?: string;
  /** the process's start time in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid apart */
  startTicks?: string;
}

function readBootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Field 22 of /proc/PID/stat (after the parenthesised command, which may hold spaces). */
export function processStartTicks(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19];
  } catch {
    return undefined;
  }
}

let self: Holder | undefined;

export function currentHolder(): Holder {
  if (!self) {
    let user = 'unknown';
    try {
      user = userInfo().username;
    } catch {
      /* no passwd entry */
    }
    const bootId = readBootId();
    const startTicks = processStartTicks(process.pid);
    self = { user, host: hostname(), pid: process.pid, ...(bootId ? { bootId } : {}), ...(startTicks ? { startTicks } : {}) };
  }
  return self;
}

/**
 * 'dead' when the holder ran on this machine (same host name and boot) and
 * that process is gone (or its pid now belongs to another process); 'alive'
 * when it still runs here; 'unknown' for another machine.
 */
export function holderLiveness(h: Holder): 'alive' | 'dead' | 'unknown' {
  const me = currentHolder();
  if (h.host !== me.host || !h.bootId || h.bootId !== me.bootId) return 'unknown';
  if (h.pid === me.pid && h.startTicks === me.startTicks) return 'alive';
  const ticks = processStartTicks(h.pid);
  if (ticks === undefined) return 'dead';
  if (h.startTicks !== undefined && ticks !== h.startTicks) return 'dead';
  return 'alive';
}

export function describeHolder(h: Holder): string {
  return `${h.user}@${h.host} pid ${h.pid}`;
}
