/**
 * watchVmEvents (src/core/vm/events.ts) on the main libvirtd: defining and
 * undefining two never-started domains; only the named VM's events arrive,
 * and the watch returns (unsubscribed) on abort and on connection close.
 */
import { XMLBuilder } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection } from '../../src/libvirt/connection.js';
import { watchVmEvents, type DomainLifecycleEvent } from '../../src/core/vm/events.js';

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_' });
const mine = `tlv-events-${process.pid}`;
const other = `tlv-events-other-${process.pid}`;
const domXml = (name: string) =>
  builder.build({
    domain: { '@_type': 'qemu', name, memory: { '@_unit': 'MiB', '#text': 32 }, vcpu: 1, os: { type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' } } },
  }) as string;

async function waitFor(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('watchVmEvents (qemu:///system)', () => {
  let conn: Connection;
  beforeAll(async () => {
    conn = await Connection.open('qemu:///system');
  });
  afterAll(async () => {
    for (const d of (await conn?.listDomains({ inactive: true })) ?? []) {
      if (d.name === mine || d.name === other) await d.undefine().catch(() => undefined);
    }
    await conn?.close();
  });

  it('delivers only the named VM events and returns on abort', async () => {
    const seen: DomainLifecycleEvent[] = [];
    const ac = new AbortController();
    const watching = watchVmEvents(conn, { name: mine, signal: ac.signal }, (e) => seen.push(e));
    await new Promise((r) => setTimeout(r, 300)); // subscribed
    await (await conn.defineDomain(domXml(other))).undefine();
    const d = await conn.defineDomain(domXml(mine));
    await d.undefine();
    await waitFor('defined + undefined', () => seen.length >= 2);
    ac.abort();
    expect(await watching).toBe('aborted');
    expect(seen.map((e) => [e.domain.name, e.event])).toEqual([
      [mine, 'defined'],
      [mine, 'undefined'],
    ]);
    expect(conn.listenerCount('lifecycle')).toBe(0);
    // unsubscribed: a later subscription registers afresh (no stale callback id)
    const again = new AbortController();
    const w2 = watchVmEvents(conn, { signal: again.signal }, () => undefined);
    again.abort();
    expect(await w2).toBe('aborted');
  });

  it('returns "aborted" at once for an aborted signal, "closed" when the connection closes', async () => {
    expect(await watchVmEvents(conn, { signal: AbortSignal.abort() }, () => undefined)).toBe('aborted');
    const c2 = await Connection.open('qemu:///system');
    const w = watchVmEvents(c2, {}, () => undefined);
    await new Promise((r) => setTimeout(r, 200));
    await c2.close();
    expect(await w).toBe('closed');
  });
});
