/** The operation layer's pure parts: fault knob, holders, leases' staleness, intent markers, undo order, event rendering. */
import { PassThrough } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { parseFaults, faultAt, performFault } from '../../src/core/op/fault.js';
import { currentHolder, holderLiveness, processStartTicks } from '../../src/core/op/holder.js';
import { isStale, Lease, parseLeaseRecord, type LeaseRecord } from '../../src/core/op/lease.js';
import type { Connection } from '../../src/libvirt/connection.js';
import { markerMetadata, newMarker, parseOpMarker, OP_XMLNS } from '../../src/core/op/journal.js';
import { UndoStack } from '../../src/core/op/undo.js';
import { abortError } from '../../src/core/op/context.js';
import { VmctlError } from '../../src/core/errors.js';
import { exitCodeFor } from '../../src/cli/exit.js';
import { createEventRenderer, resolveMode } from '../../src/cli/events.js';
import type { OpEventEnvelope } from '../../src/core/op/events.js';
import { xmlBuilder } from '../../src/core/xml.js';

describe('VMCTL_FAULT', () => {
  it('parses kill, throw and sleep points, several at once', () => {
    const f = parseFaults('create:after-volumes:kill, create:after-define:sleep=2500,delete:after-mark:throw');
    expect(f.get('create:after-volumes')).toEqual({ kind: 'kill' });
    expect(f.get('create:after-define')).toEqual({ kind: 'sleep', ms: 2500 });
    expect(f.get('delete:after-mark')).toEqual({ kind: 'throw' });
    expect(faultAt('create', 'after-volumes', { VMCTL_FAULT: 'create:after-volumes:kill' })).toEqual({ kind: 'kill' });
    expect(faultAt('create', 'after-keys', { VMCTL_FAULT: 'create:after-volumes:kill' })).toBeUndefined();
    expect(faultAt('create', 'after-keys', {})).toBeUndefined();
  });
  it('a sleep point ends early when the operation is aborted (Ctrl-C)', async () => {
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 50);
    await performFault('backup:mid-download', { kind: 'sleep', ms: 10_000 }, ac.signal);
    expect(Date.now() - t0).toBeLessThan(2000);
    const t1 = Date.now();
    await performFault('backup:mid-download', { kind: 'sleep', ms: 10_000 }, ac.signal); // aborted already: at once
    expect(Date.now() - t1).toBeLessThan(100);
  });
  it('refuses a malformed knob with the expected form', () => {
    expect(() => parseFaults('create:after-volumes')).toThrow(/OP:POINT:kill\|throw\|sleep=MS/);
    expect(() => parseFaults('create:x:explode')).toThrow(VmctlError);
  });
});

describe('holders', () => {
  it('knows this process is alive and a gone pid is dead', () => {
    const me = currentHolder();
    expect(me.pid).toBe(process.pid);
    expect(holderLiveness(me)).toBe('alive');
    // a pid that cannot exist (above pid_max) on the same boot: dead
    expect(holderLiveness({ ...me, pid: 2 ** 30, startTicks: '1' })).toBe('dead');
    // the same pid with another start time: reused, so dead
    expect(holderLiveness({ ...me, startTicks: String(Number(processStartTicks(process.pid)) + 1) })).toBe('dead');
    // another machine: cannot tell
    expect(holderLiveness({ ...me, host: 'elsewhere' })).toBe('unknown');
  });
});

describe('leases', () => {
  const base = (): LeaseRecord => ({ ...currentHolder(), op: 'create', opId: 'x', since: new Date().toISOString(), expires: new Date(Date.now() + 30_000).toISOString() });
  it('is held while its holder lives and the time has not run out', () => {
    expect(isStale(base())).toBe(false);
    expect(isStale({ ...base(), expires: new Date(Date.now() - 1).toISOString() })).toBe(true);
    expect(isStale({ ...base(), pid: 2 ** 30 })).toBe(true);
    expect(isStale({ ...base(), host: 'elsewhere' })).toBe(false);
    expect(isStale(null)).toBe(true);
  });
  it('reads the record back from the secret XML, and nothing from foreign secrets', () => {
    const r = base();
    const xml = xmlBuilder.build({ secret: { description: JSON.stringify(r), usage: { '@_type': 'tls', name: 'vmctl-lease/vm/a' } } }) as string;
    expect(parseLeaseRecord(xml)).toEqual(r);
    expect(parseLeaseRecord('<secret><description>not json</description></secret>')).toBeNull();
    expect(parseLeaseRecord('<secret/>')).toBeNull();
  });
  it('reports a renewal failing once per streak, and when it works again', async () => {
    vi.useFakeTimers();
    try {
      // a stand-in for the host: renewals (defineSecret) fail while `down`, as they do while libvirtd restarts
      let down = false;
      const secret = { uuidString: 'u-1', xml: async () => '<secret/>', undefine: async () => undefined };
      const conn = {
        defineSecret: async () => {
          if (down) throw new Error('connection to qemu:///system closed: the daemon closed the connection');
          return secret;
        },
        lookupSecretByUsage: async () => secret,
      } as unknown as Connection;
      const failed: string[] = [];
      let renewed = 0;
      const lease = await Lease.acquire(() => conn, 'vm/a', { kind: 'backup', id: 'op-1', what: 'VM a' }, (e) => failed.push(e.message), () => renewed++);
      await vi.advanceTimersByTimeAsync(25_000); // two renewals that work
      expect([failed.length, renewed]).toEqual([0, 0]);
      down = true;
      await vi.advanceTimersByTimeAsync(60_000); // six that fail: said once
      expect(failed).toEqual(['connection to qemu:///system closed: the daemon closed the connection']);
      down = false;
      await vi.advanceTimersByTimeAsync(10_000);
      expect(renewed).toBe(1);
      down = true;
      await vi.advanceTimersByTimeAsync(20_000); // a new streak: said again
      expect([failed.length, renewed]).toEqual([2, 1]);
      await lease.release();
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('intent markers', () => {
  it('round-trips through domain XML, matched by namespace, not prefix', () => {
    const m = newMarker('create', 'op-1', 'volumes');
    const xml = xmlBuilder.build({ domain: { name: 'a', metadata: markerMetadata(m) } }) as string;
    expect(parseOpMarker(xml)).toEqual(m);
    const otherPrefix = `<domain><metadata><x:op xmlns:x="${OP_XMLNS}" op="create" opId="1" step="keys" since="s" updated="u" user="u" host="h" pid="7"/></metadata></domain>`;
    expect(parseOpMarker(otherPrefix)).toMatchObject({ op: 'create', step: 'keys', pid: 7 });
    const foreign = `<domain><metadata><x:op xmlns:x="https://example.com/other" op="create"/></metadata></domain>`;
    expect(parseOpMarker(foreign)).toBeNull();
    expect(parseOpMarker('<domain><name>a</name></domain>')).toBeNull();
  });
});

describe('undo stack', () => {
  it('undoes newest first, reports each step, goes on past a failing one', async () => {
    const u = new UndoStack();
    const done: string[] = [];
    u.push('a', () => void done.push('a'));
    u.push('b', () => {
      throw new Error('nope');
    });
    u.push('c', () => void done.push('c'));
    const reports: string[] = [];
    const failed = await u.unwind(async () => ({}) as never, (what, ok) => reports.push(`${what}:${ok}`));
    expect(done).toEqual(['c', 'a']);
    expect(reports).toEqual(['c:true', 'b:false', 'a:true']);
    expect(failed).toEqual(['b']);
    expect(u.size).toBe(0);
  });
  it('a step without a connection parameter runs while the daemon is unreachable; one with it gets the connection', async () => {
    const u = new UndoStack();
    const done: string[] = [];
    u.push('local dir', () => void done.push('local'));
    u.push('volume', (c) => void done.push(`volume via ${(c as unknown as { id: string }).id}`));
    let asked = 0;
    const down = async () => {
      asked++;
      throw new Error('cannot connect to libvirt');
    };
    const reports: string[] = [];
    expect(await u.unwind(down, (what, ok) => reports.push(`${what}:${ok}`))).toEqual(['volume']);
    expect(reports).toEqual(['volume:false', 'local dir:true']);
    expect(done).toEqual(['local']);
    expect(asked).toBe(1);
    u.push('volume', (c) => void done.push(`volume via ${(c as unknown as { id: string }).id}`));
    await u.unwind(async () => ({ id: 'c1' }) as never, () => undefined);
    expect(done).toEqual(['local', 'volume via c1']);
  });
  it('an interruption is ABORTED, exit 130, naming what could not be undone', () => {
    expect(exitCodeFor(abortError('create').code)).toBe(130);
    expect(abortError('create').oneLine()).toBe('create interrupted (nothing it made was left behind)');
    expect(abortError('create', undefined, ['volume a']).oneLine()).toMatch(/could not remove volume a: vmctl delete/);
  });
});

describe('event rendering', () => {
  const ev = (e: Record<string, unknown>, atMs = 1200): OpEventEnvelope => ({ op: 'create', opId: 'x', atMs, ts: '2026-01-01T00:00:00.000Z', ...e }) as OpEventEnvelope;
  const sink = (tty: boolean) => {
    const s = new PassThrough() as PassThrough & { isTTY?: boolean; columns?: number };
    s.isTTY = tty;
    s.columns = 100;
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString()));
    return { stream: s as unknown as NodeJS.WriteStream, out: () => out };
  };

  it('auto is tty on a terminal, plain on a pipe (with --json too), none when logs are silenced', () => {
    expect(resolveMode({ mode: 'auto', stream: { isTTY: true } as NodeJS.WriteStream })).toBe('tty');
    expect(resolveMode({ mode: 'auto', stream: { isTTY: false } as NodeJS.WriteStream })).toBe('plain');
    expect(resolveMode({ mode: 'auto', json: true, stream: { isTTY: false } as NodeJS.WriteStream })).toBe('plain');
    expect(resolveMode({ mode: 'auto', log: { level: 'silent' } as never })).toBe('none');
    expect(resolveMode({ mode: 'json', json: true })).toBe('json');
  });

  it('tty: a live line says what is awaited and the time so far, rewritten in place, cleared by the next phase', async () => {
    const { stream, out } = sink(true);
    const r = createEventRenderer({ mode: 'tty', stream, tickMs: 20 });
    r.sink(ev({ type: 'phase', phase: 'started' }, 500));
    r.sink(ev({ type: 'wait', what: 'an IP address (DHCP lease, guest agent, ARP)' }));
    await new Promise((res) => setTimeout(res, 120));
    r.sink(ev({ type: 'phase', phase: 'ip', detail: '10.0.2.15 (agent)' }, 38_000));
    r.stop();
    const text = out();
    expect(text).toContain('  started       0.5 s\n');
    const live = text.split('\r\x1b[2K').filter((l) => l.includes('waiting for an IP address'));
    expect(live.length).toBeGreaterThan(2); // redrawn while waiting
    expect(live.at(-1)).toMatch(/waiting for an IP address \(DHCP lease, guest agent, ARP\) … \d+\.\d s/);
    // eslint-disable-next-line no-control-regex -- the live line is cleared with ESC [2K
    expect(text).toMatch(/\r\x1b\[2K {2}ip +38\.0 s {2}10\.0\.2\.15 \(agent\)\n$/);
  });

  it('plain: one line per wait, no carriage returns', () => {
    const { stream, out } = sink(false);
    const r = createEventRenderer({ mode: 'plain', stream });
    r.sink(ev({ type: 'wait', what: 'sshd on 127.0.0.1:2222 (pinned host key)' }));
    r.sink(ev({ type: 'warning', message: 'careful' }));
    r.sink(ev({ type: 'undo', what: 'volume a', ok: true }));
    r.stop();
    expect(out()).toBe('  waiting for sshd on 127.0.0.1:2222 (pinned host key) …\nvmctl: WARNING: careful\n  undone     volume a\n');
  });

  it('json: every event as one JSON line with op, time and type', () => {
    const { stream, out } = sink(true);
    const r = createEventRenderer({ mode: 'json', stream });
    r.sink(ev({ type: 'phase', phase: 'defined' }));
    r.sink(ev({ type: 'progress', phase: 'upload', done: 5, total: 10, bytesPerSecond: 1, etaSeconds: 5 }));
    const lines = out().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toEqual([
      { op: 'create', opId: 'x', atMs: 1200, ts: '2026-01-01T00:00:00.000Z', type: 'phase', phase: 'defined' },
      { op: 'create', opId: 'x', atMs: 1200, ts: '2026-01-01T00:00:00.000Z', type: 'progress', phase: 'upload', done: 5, total: 10, bytesPerSecond: 1, etaSeconds: 5 },
    ]);
  });
});
