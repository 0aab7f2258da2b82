import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeServer, sleep } from './_fake-server.js';
import type { FakeConn } from './_fake-server.js';
import { ECHO } from './_specs.js';
import { LibvirtError } from '../../../src/libvirt/errors.js';
import type { RpcClient } from '../../../src/libvirt/rpc/client.js';
import {
  KEEPALIVE_PROGRAM,
  KEEPALIVE_PROTOCOL_VERSION,
  KeepaliveProcedure,
  VirNetMessageStatus,
  VirNetMessageType,
} from '../../../src/libvirt/rpc/protocol.js';

let server: FakeServer;
let client: RpcClient;
let conn: FakeConn;

beforeEach(async () => {
  server = await FakeServer.start();
  ({ client, conn } = await server.connect());
  conn.hideKeepalive = false;
});

afterEach(async () => {
  client.destroy();
  await server.stop();
});

const ka = (proc: KeepaliveProcedure) => ({
  prog: KEEPALIVE_PROGRAM,
  vers: KEEPALIVE_PROTOCOL_VERSION,
  proc,
  type: VirNetMessageType.VIR_NET_MESSAGE,
  serial: 0,
  status: VirNetMessageStatus.VIR_NET_OK,
});

describe('keepalive', () => {
  it("answers the daemon's PING with a PONG, even without startKeepalive()", async () => {
    conn.send(ka(KeepaliveProcedure.KEEPALIVE_PROC_PING));
    const pong = await conn.next();
    expect(pong.header).toEqual(ka(KeepaliveProcedure.KEEPALIVE_PROC_PONG));
    expect(pong.body.length).toBe(0);
  });

  it('sends PINGs when the daemon is silent and stays up while PONGs come back', async () => {
    conn.autoPong = true;
    client.startKeepalive({ intervalMs: 40, count: 2 });
    const ping = await conn.next();
    expect(ping.header).toEqual(ka(KeepaliveProcedure.KEEPALIVE_PROC_PING));
    await sleep(400); // ~10 intervals, each answered
    expect(client.isClosed).toBe(false);
    const pings = conn.log.filter((p) => p.header.prog === KEEPALIVE_PROGRAM).length;
    expect(pings).toBeGreaterThanOrEqual(3);
  });

  it('closes the connection with a clear error after `count` unanswered PINGs', async () => {
    conn.autoPong = false;
    const pending = client.call(ECHO, 1).catch((e: unknown) => e);
    client.startKeepalive({ intervalMs: 40, count: 3 });
    const t0 = Date.now();
    const reason = await client.closed;
    const elapsed = Date.now() - t0;
    expect(reason).toBeInstanceOf(LibvirtError);
    expect(reason.kind).toBe('transport');
    expect(reason.isConnectionLost()).toBe(true);
    expect(reason.message).toMatch(/no keepalive response from the daemon after 3 pings/);
    // 3 pings, then one more interval: about 4 intervals (generous bounds for a loaded CI box)
    expect(elapsed).toBeGreaterThanOrEqual(150);
    expect(elapsed).toBeLessThan(2000);
    const pings = conn.log.filter((p) => p.header.proc === KeepaliveProcedure.KEEPALIVE_PROC_PING);
    expect(pings).toHaveLength(3);
    expect(await pending).toBe(reason);
    await conn.closed;
  });

  it('any traffic from the daemon counts as liveness', async () => {
    conn.autoPong = false;
    client.startKeepalive({ intervalMs: 60, count: 1 });
    const stop = Date.now() + 500;
    while (Date.now() < stop) {
      conn.send({ ...ka(KeepaliveProcedure.KEEPALIVE_PROC_PONG) });
      await sleep(20);
    }
    expect(client.isClosed).toBe(false);
    client.stopKeepalive();
  });
});
