import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeServer, frame, remoteError, sleep } from './_fake-server.js';
import type { FakeConn } from './_fake-server.js';
import { ECHO, PING } from './_specs.js';
import { LibvirtError } from '../../../src/libvirt/errors.js';
import type { RpcClient } from '../../../src/libvirt/rpc/client.js';
import {
  Procedure,
  REMOTE_PROGRAM,
  VirNetMessageStatus,
  VirNetMessageType,
} from '../../../src/libvirt/rpc/protocol.js';

let server: FakeServer;
let client: RpcClient;
let conn: FakeConn;

beforeEach(async () => {
  server = await FakeServer.start();
  ({ client, conn } = await server.connect());
});

afterEach(async () => {
  client.destroy();
  await server.stop();
});

async function rejection(p: Promise<unknown>): Promise<LibvirtError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(LibvirtError);
    return e as LibvirtError;
  }
  throw new Error('expected a rejection');
}

const int = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};

describe('RpcClient calls', () => {
  it('sends a well-formed CALL and resolves with the decoded reply', async () => {
    const p = client.call(ECHO, 41);
    const call = await conn.next();
    expect(call.header).toMatchObject({
      prog: REMOTE_PROGRAM,
      vers: 1,
      proc: ECHO.procedure,
      type: VirNetMessageType.VIR_NET_CALL,
      status: VirNetMessageStatus.VIR_NET_OK,
    });
    expect(call.body.readInt32BE(0)).toBe(41);
    conn.reply(call, int(42));
    await expect(p).resolves.toBe(42);
  });

  it('matches 100 in-flight calls answered out of order by serial', async () => {
    const calls = Array.from({ length: 100 }, (_, i) => client.call(ECHO, i));
    const received = await conn.take(100);
    expect(new Set(received.map((c) => c.header.serial)).size).toBe(100);
    // answer in a scrambled order: reverse, interleaved
    const order = received.map((_, i) => i).sort((a, b) => ((a * 37) % 101) - ((b * 37) % 101));
    for (const i of order) {
      const c = received[i]!;
      conn.reply(c, int(c.body.readInt32BE(0) * 2));
    }
    await expect(Promise.all(calls)).resolves.toEqual(Array.from({ length: 100 }, (_, i) => i * 2));
    expect(client.pendingCalls).toBe(0);
  });

  it('void procedures send and expect empty bodies', async () => {
    const p = client.call(PING, undefined);
    const call = await conn.next();
    expect(call.body.length).toBe(0);
    conn.reply(call);
    await expect(p).resolves.toBeUndefined();
  });

  it('turns a status ERROR reply into a LibvirtError with every field', async () => {
    const p = client.call(ECHO, 1);
    const call = await conn.next();
    conn.replyError(call, remoteError({ str3: 'three', int1: 7, int2: 8 }));
    const err = await rejection(p);
    expect(err.kind).toBe('remote');
    expect(err.code).toBe(42);
    expect(err.domain).toBe(10);
    expect(err.level).toBe(2);
    expect(err.message).toBe("Domain not found: no domain with matching name 'nope'");
    expect(err.str1).toBe('Domain not found: %s');
    expect(err.str2).toBe("no domain with matching name 'nope'");
    expect(err.str3).toBe('three');
    expect(err.int1).toBe(7);
    expect(err.int2).toBe(8);
    expect(err.isNotFound()).toBe(true);
    expect(err.isConnectionLost()).toBe(false);
    // the connection is still fine
    const q = client.call(ECHO, 5);
    conn.reply(await conn.next(), int(6));
    await expect(q).resolves.toBe(6);
  });

  it('handles an error with a null message', async () => {
    const p = client.call(ECHO, 1);
    conn.replyError(await conn.next(), remoteError({ message: null, code: 1, str1: null, str2: null }));
    const err = await rejection(p);
    expect(err.message).toMatch(/libvirt error code 1/);
    expect(err.str1).toBeUndefined();
  });
});

describe('RpcClient failures close the connection and reject everything', () => {
  it('a truncated frame followed by EOF rejects every pending call, and later calls', async () => {
    const calls = [client.call(ECHO, 1), client.call(ECHO, 2), client.call(PING, undefined)];
    const [first] = await conn.take(3);
    const whole = frame({ ...first!.header, type: VirNetMessageType.VIR_NET_REPLY }, int(1));
    conn.sendRaw(whole.subarray(0, whole.length - 2));
    await sleep(20);
    conn.socket.end();
    const errs = await Promise.all(calls.map(rejection));
    for (const e of errs) {
      expect(e.kind).toBe('transport');
      expect(e.isConnectionLost()).toBe(true);
      expect(e.message).toContain(`connection to unix:${server.path} closed`);
    }
    const later = await rejection(client.call(ECHO, 3));
    expect(later.isConnectionLost()).toBe(true);
    expect(client.isClosed).toBe(true);
  });

  it('an oversize length (0x7fffffff) is a protocol error that closes the connection', async () => {
    const p = client.call(ECHO, 1);
    await conn.next();
    conn.sendRaw(Buffer.from([0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]));
    const err = await rejection(p);
    expect(err.kind).toBe('protocol');
    expect(err.message).toMatch(/protocol error on connection to unix:.*too large.*connection closed/);
    await conn.closed; // the client hung up
    await expect(rejection(client.call(ECHO, 2))).resolves.toBe(err);
  });

  it('a garbage header (unknown message type) closes the connection', async () => {
    const p = client.call(ECHO, 1);
    const call = await conn.next();
    conn.send({ ...call.header, type: 99 as VirNetMessageType });
    const err = await rejection(p);
    expect(err.kind).toBe('protocol');
    expect(err.message).toMatch(/unexpected message type 99/);
  });

  it('a CALL from the daemon is a protocol error', async () => {
    const p = client.call(ECHO, 1);
    const call = await conn.next();
    conn.send({ ...call.header, type: VirNetMessageType.VIR_NET_CALL });
    expect((await rejection(p)).kind).toBe('protocol');
  });

  it('a reply for an unknown serial closes the connection', async () => {
    const p = client.call(ECHO, 1);
    const call = await conn.next();
    conn.reply({ ...call, header: { ...call.header, serial: call.header.serial + 1000 } }, int(0));
    const err = await rejection(p);
    expect(err.kind).toBe('protocol');
    expect(err.message).toMatch(/reply for unknown serial/);
  });

  it('a reply with the wrong procedure closes the connection', async () => {
    const p = client.call(ECHO, 1);
    const call = await conn.next();
    conn.reply({ ...call, header: { ...call.header, proc: 1 } }, int(0));
    const err = await rejection(p);
    expect(err.message).toMatch(/was called/);
  });

  it('bad XDR in a reply closes the connection and rejects all pending calls', async () => {
    const a = client.call(ECHO, 1);
    const b = client.call(ECHO, 2);
    const [ca] = await conn.take(2);
    conn.reply(ca!, Buffer.from([0, 0])); // 2 bytes where an int is expected
    const [ea, eb] = await Promise.all([rejection(a), rejection(b)]);
    expect(ea.kind).toBe('protocol');
    expect(ea.message).toMatch(/malformed reply to TEST_PROC_ECHO/);
    expect(eb).toBe(ea);
  });

  it('trailing bytes after a reply are a protocol error too', async () => {
    const a = client.call(PING, undefined);
    conn.reply(await conn.next(), int(0));
    expect((await rejection(a)).kind).toBe('protocol');
  });

  it('a malformed error body closes the connection', async () => {
    const a = client.call(ECHO, 1);
    const call = await conn.next();
    conn.send({ ...call.header, type: VirNetMessageType.VIR_NET_REPLY, status: VirNetMessageStatus.VIR_NET_ERROR }, int(1));
    expect((await rejection(a)).message).toMatch(/malformed error reply/);
  });

  it('a killed connection rejects all pending calls and later calls immediately', async () => {
    const calls = Array.from({ length: 20 }, (_, i) => client.call(ECHO, i));
    await conn.take(20);
    const closed = new Promise<LibvirtError>((resolve) => client.once('close', resolve));
    conn.socket.destroy();
    const errs = await Promise.all(calls.map(rejection));
    expect(errs.every((e) => e.isConnectionLost())).toBe(true);
    expect((await closed).isConnectionLost()).toBe(true);
    const t0 = Date.now();
    const later = await rejection(client.call(ECHO, 99));
    expect(Date.now() - t0).toBeLessThan(50);
    expect(later.message).toContain('closed');
  });
});

describe('RpcClient timeouts, abort and close', () => {
  it('a timed-out call rejects with kind timeout; its late reply is dropped, the connection survives', async () => {
    const p = client.call(ECHO, 1, { timeoutMs: 30 });
    const call = await conn.next();
    const err = await rejection(p);
    expect(err.kind).toBe('timeout');
    expect(err.isConnectionLost()).toBe(false);
    conn.reply(call, int(1)); // late
    const q = client.call(ECHO, 2);
    conn.reply(await conn.next(), int(3));
    await expect(q).resolves.toBe(3);
    expect(client.isClosed).toBe(false);
  });

  it('an abort signal stops waiting', async () => {
    const ac = new AbortController();
    const p = client.call(ECHO, 1, { signal: ac.signal });
    await conn.next();
    ac.abort(new Error('user pressed ^C'));
    const err = await rejection(p);
    expect(err.kind).toBe('timeout');
    expect(err.message).toMatch(/aborted: user pressed \^C/);
    await expect(rejection(client.call(ECHO, 1, { signal: ac.signal }))).resolves.toMatchObject({ kind: 'timeout' });
  });

  it('close() sends CONNECT_CLOSE, then ends the connection and rejects stragglers', async () => {
    const straggler = rejection(client.call(ECHO, 1));
    await conn.next();
    const closing = client.close();
    const cc = await conn.next();
    expect(cc.header.proc).toBe(Procedure.REMOTE_PROC_CONNECT_CLOSE);
    expect(cc.body.length).toBe(0);
    conn.reply(cc);
    await closing;
    await conn.closed;
    const err = await straggler;
    expect(err.message).toMatch(/closed by the client/);
    expect(client.isClosed).toBe(true);
    await client.close(); // idempotent
  });

  it('close() does not hang when the daemon never answers CONNECT_CLOSE', async () => {
    const t0 = Date.now();
    await client.close({ timeoutMs: 50 });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(client.isClosed).toBe(true);
  });
});

describe('RpcClient events', () => {
  it('routes MESSAGE packets to subscribers by (program, procedure), raw or decoded', async () => {
    const raw: Buffer[] = [];
    const decoded: number[] = [];
    const all: number[] = [];
    const unsubRaw = client.onEvent(REMOTE_PROGRAM, 318, (body) => raw.push(Buffer.from(body)));
    client.onEvent(REMOTE_PROGRAM, 318, (v: number) => decoded.push(v), (r) => r.readInt());
    client.onEvent(REMOTE_PROGRAM, 319, () => decoded.push(-1), (r) => r.readInt());
    client.onMessage((info) => all.push(info.procedure));
    const ev = { prog: REMOTE_PROGRAM, vers: 1, proc: 318, type: VirNetMessageType.VIR_NET_MESSAGE, serial: 0, status: VirNetMessageStatus.VIR_NET_OK };
    conn.send(ev, int(5));
    conn.send({ ...ev, proc: 400 }, int(6));
    // a call still works in between
    const p = client.call(ECHO, 1);
    conn.reply(await conn.next(), int(1));
    await p;
    expect(raw.map((b) => b.readInt32BE(0))).toEqual([5]);
    expect(decoded).toEqual([5]);
    expect(all).toEqual([318, 400]);
    unsubRaw();
    conn.send(ev, int(7));
    const q = client.call(ECHO, 1);
    conn.reply(await conn.next(), int(1));
    await q;
    expect(raw).toHaveLength(1);
    expect(decoded).toEqual([5, 7]);
  });

  it('a throwing handler does not break the client', async () => {
    const errors: unknown[] = [];
    client.destroy();
    ({ client, conn } = await server.connect({ onHandlerError: (e) => errors.push(e) }));
    client.onEvent(REMOTE_PROGRAM, 318, () => {
      throw new Error('boom');
    });
    conn.send({ prog: REMOTE_PROGRAM, vers: 1, proc: 318, type: VirNetMessageType.VIR_NET_MESSAGE, serial: 0, status: 0 });
    const p = client.call(ECHO, 1);
    conn.reply(await conn.next(), int(1));
    await expect(p).resolves.toBe(1);
    expect(errors).toHaveLength(1);
  });

  it('an event body that does not decode is a protocol error', async () => {
    client.onEvent(REMOTE_PROGRAM, 318, () => undefined, (r) => r.readHyper());
    const p = client.call(ECHO, 1);
    await conn.next();
    conn.send({ prog: REMOTE_PROGRAM, vers: 1, proc: 318, type: VirNetMessageType.VIR_NET_MESSAGE, serial: 0, status: 0 }, int(1));
    expect((await rejection(p)).message).toMatch(/malformed event/);
  });
});

describe('RpcClient odd cases', () => {
  it('a REPLY_WITH_FDS fails only that call', async () => {
    const p = client.call(ECHO, 1);
    const call = await conn.next();
    conn.send({ ...call.header, type: VirNetMessageType.VIR_NET_REPLY_WITH_FDS, status: VirNetMessageStatus.VIR_NET_OK }, int(1));
    const err = await rejection(p);
    expect(err.message).toMatch(/file descriptors/);
    expect(err.isConnectionLost()).toBe(false);
    expect(client.isClosed).toBe(false);
  });

  it('a stream call abandoned by timeout aborts the stream the daemon opens later', async () => {
    const { DOWNLOAD } = await import('./_specs.js');
    const p = client.callStream(DOWNLOAD, undefined, { timeoutMs: 20 });
    const call = await conn.next();
    expect((await rejection(p)).kind).toBe('timeout');
    conn.reply(call);
    const abort = await conn.next();
    expect(abort.header).toMatchObject({
      type: VirNetMessageType.VIR_NET_STREAM,
      status: VirNetMessageStatus.VIR_NET_ERROR,
      serial: call.header.serial,
    });
    // data the daemon still sends for it is ignored
    conn.send({ ...call.header, type: VirNetMessageType.VIR_NET_STREAM, status: VirNetMessageStatus.VIR_NET_CONTINUE }, int(1));
    const q = client.call(ECHO, 2);
    conn.reply(await conn.next(), int(2));
    await expect(q).resolves.toBe(2);
  });

  it('a client over an already-destroyed socket rejects calls at once', async () => {
    const { RpcClient } = await import('../../../src/libvirt/rpc/client.js');
    const { Duplex } = await import('node:stream');
    const dead = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
    dead.destroy();
    const c = new RpcClient(dead, { description: 'test:dead' });
    expect(c.isClosed).toBe(true);
    expect((await rejection(c.call(ECHO, 1))).message).toMatch(/test:dead is not open/);
  });

  it('fromTransport() closes the transport when the connection closes', async () => {
    const { RpcClient } = await import('../../../src/libvirt/rpc/client.js');
    const { socket } = await server.rawConnect();
    let closedTransport = 0;
    const c = RpcClient.fromTransport({ stream: socket, description: 'unix:x', close: () => closedTransport++ });
    c.destroy();
    expect(closedTransport).toBe(1);
    expect(c.closeReason?.message).toMatch(/connection to unix:x closed by the client/);
  });
});
