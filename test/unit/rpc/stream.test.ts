import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FakeServer, remoteError, sleep } from './_fake-server.js';
import type { FakeConn } from './_fake-server.js';
import { CONSOLE, DOWNLOAD, ECHO, UPLOAD } from './_specs.js';
import { LibvirtError } from '../../../src/libvirt/errors.js';
import type { RpcClient } from '../../../src/libvirt/rpc/client.js';
import type { Packet } from '../../../src/libvirt/rpc/framing.js';
import {
  VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX,
  VirNetMessageStatus,
  VirNetMessageType,
  encodeVirNetMessageError,
} from '../../../src/libvirt/rpc/protocol.js';

const { VIR_NET_OK, VIR_NET_ERROR, VIR_NET_CONTINUE } = VirNetMessageStatus;

let server: FakeServer;
let client: RpcClient;
let conn: FakeConn;

beforeEach(async () => {
  server = await FakeServer.start();
});

afterEach(async () => {
  client?.destroy();
  await server.stop();
});

async function open(limit?: number): Promise<void> {
  ({ client, conn } = await server.connect(limit ? { streamBufferLimit: limit } : {}));
}

/** Make a stream call and answer it OK; returns the call packet and the stream. */
async function openStream(spec = DOWNLOAD) {
  const pending = client.callStream(spec, undefined);
  const call = await conn.next();
  conn.reply(call);
  const { stream } = await pending;
  return { call, stream };
}

function chunk(i: number, size: number): Buffer {
  const b = Buffer.alloc(size, i & 0xff);
  b.writeUInt32BE(i, 0);
  return b;
}

describe('download (read stream)', () => {
  it('delivers many chunks to a slow consumer, pausing the socket under back-pressure', async () => {
    const LIMIT = 256 * 1024;
    await open(LIMIT);
    const { call, stream } = await openStream();
    const N = 300;
    const SIZE = 32 * 1024; // ~9.4 MiB in total

    let serverBlocked = 0;
    const producer = (async () => {
      for (let i = 0; i < N; i++) {
        if (!conn.stream(call, VIR_NET_CONTINUE, chunk(i, SIZE))) {
          serverBlocked++;
          await conn.drain();
        }
      }
      conn.stream(call, VIR_NET_CONTINUE); // end of data
    })();

    let sawPaused = false;
    let maxBuffered = 0;
    const impl = stream as unknown as { bufferedBytes: number };
    const received: Buffer[] = [];
    let slow = true;
    const sink = new Writable({
      highWaterMark: 16 * 1024,
      write(c: Buffer, _e, cb) {
        received.push(c);
        if (client.readPaused) sawPaused = true;
        maxBuffered = Math.max(maxBuffered, impl.bufferedBytes);
        // slow for the first ~3 MiB, then fast
        if (slow && received.length > 100) slow = false;
        if (slow) setTimeout(cb, 2);
        else cb();
      },
    });
    const finishSeen = (async () => {
      const fin = await conn.next();
      expect(fin.header).toMatchObject({ type: VirNetMessageType.VIR_NET_STREAM, status: VIR_NET_OK, serial: call.header.serial });
      expect(fin.body.length).toBe(0);
      conn.stream(call, VIR_NET_OK);
    })();

    await pipeline(stream, sink);
    await producer;
    await finishSeen;
    await stream.done;

    const all = Buffer.concat(received);
    expect(all.length).toBe(N * SIZE);
    for (let i = 0; i < N; i++) expect(all.readUInt32BE(i * SIZE)).toBe(i);
    expect(sawPaused).toBe(true);
    expect(serverBlocked).toBeGreaterThan(0); // the client really stopped reading
    // bounded: the limit, plus what one socket read can carry, plus the Readable's buffer
    expect(maxBuffered).toBeLessThan(LIMIT + 2 * 1024 * 1024);
    expect(client.readPaused).toBe(false);
    // the connection is still usable
    const p = client.call(ECHO, 1);
    const c = await conn.next();
    conn.reply(c, Buffer.from([0, 0, 0, 9]));
    await expect(p).resolves.toBe(9);
  });

  it('delays other replies while paused and delivers them once the consumer catches up', async () => {
    await open(64 * 1024);
    const { call, stream } = await openStream();
    // fill well past the limit without anybody reading
    for (let i = 0; i < 40; i++) conn.stream(call, VIR_NET_CONTINUE, chunk(i, 16 * 1024));
    await sleep(50);
    expect(client.readPaused).toBe(true);
    const echo = client.call(ECHO, 1);
    const c = await conn.next();
    conn.reply(c, Buffer.from([0, 0, 0, 5]));
    let answered = false;
    void echo.then(() => (answered = true));
    await sleep(50);
    expect(answered).toBe(false); // stuck behind the stream data, as in libvirt's C client
    stream.resume(); // consumer reads everything
    await expect(echo).resolves.toBe(5);
    conn.stream(call, VIR_NET_CONTINUE);
    const fin = await conn.next();
    conn.stream(call, VIR_NET_OK);
    expect(fin.header.status).toBe(VIR_NET_OK);
    await stream.done;
  });

  it('expands STREAM_HOLE packets into zeros, in order', async () => {
    await open();
    const { call, stream } = await openStream();
    const holes: bigint[] = [];
    stream.on('hole', (n: bigint) => holes.push(n));
    conn.stream(call, VIR_NET_CONTINUE, Buffer.from('abc'));
    conn.send({ ...call.header, type: VirNetMessageType.VIR_NET_STREAM_HOLE, status: VIR_NET_CONTINUE }, (w) => {
      w.writeHyper(3_000_000n);
      w.writeUint(0);
    });
    conn.stream(call, VIR_NET_CONTINUE, Buffer.from('xyz'));
    conn.stream(call, VIR_NET_CONTINUE);
    void conn.next().then(() => conn.stream(call, VIR_NET_OK));
    const parts: Buffer[] = [];
    for await (const c of stream) parts.push(c as Buffer);
    const all = Buffer.concat(parts);
    expect(all.length).toBe(3_000_006);
    expect(all.subarray(0, 3).toString()).toBe('abc');
    expect(all.subarray(3, 3_000_003).every((b) => b === 0)).toBe(true);
    expect(all.subarray(3_000_003).toString()).toBe('xyz');
    expect(holes).toEqual([3_000_000n]);
    await stream.done;
  });

  it('sparse(): data and hole lengths in order, holes not expanded; then the finish', async () => {
    await open();
    const { call, stream } = await openStream();
    conn.stream(call, VIR_NET_CONTINUE, Buffer.from('abc'));
    conn.send({ ...call.header, type: VirNetMessageType.VIR_NET_STREAM_HOLE, status: VIR_NET_CONTINUE }, (w) => {
      w.writeHyper(5_000_000_000n);
      w.writeUint(0);
    });
    conn.stream(call, VIR_NET_CONTINUE, Buffer.from('xyz'));
    conn.stream(call, VIR_NET_CONTINUE);
    void conn.next().then(() => conn.stream(call, VIR_NET_OK));
    const items: Array<string | bigint> = [];
    for await (const c of stream.sparse()) items.push(typeof c === 'bigint' ? c : c.toString());
    expect(items).toEqual(['abc', 5_000_000_000n, 'xyz']);
    await stream.done;
  });

  it('sparse() under back-pressure: a slow consumer gets everything, the socket paused and resumed', async () => {
    const LIMIT = 64 * 1024;
    await open(LIMIT);
    const { call, stream } = await openStream();
    const N = 100;
    for (let i = 0; i < N; i++) conn.stream(call, VIR_NET_CONTINUE, chunk(i, 16 * 1024));
    conn.stream(call, VIR_NET_CONTINUE);
    void conn.next().then(() => conn.stream(call, VIR_NET_OK));
    let n = 0;
    let paused = false;
    for await (const c of stream.sparse()) {
      expect(typeof c).not.toBe('bigint');
      expect((c as Buffer).readUInt32BE(0)).toBe(n++);
      paused ||= client.readPaused;
      await sleep(1);
    }
    expect(n).toBe(N);
    expect(paused).toBe(true);
    await stream.done;
    expect(client.readPaused).toBe(false);
  });

  it('sparse(): a daemon error ends the loop with it; leaving the loop early aborts the transfer', async () => {
    await open();
    let { call, stream } = await openStream();
    conn.stream(call, VIR_NET_CONTINUE, Buffer.from('partial'));
    conn.stream(call, VIR_NET_ERROR, (w) => encodeVirNetMessageError(w, remoteError({ code: 38, message: 'disk on fire' })));
    await expect((async () => {
      for await (const _ of stream.sparse()) void _;
    })()).rejects.toMatchObject({ kind: 'remote', message: 'disk on fire' });
    ({ call, stream } = await openStream());
    conn.stream(call, VIR_NET_CONTINUE, Buffer.from('first'));
    for await (const _ of stream.sparse()) break;
    const abort = await conn.next();
    expect(abort.header.status).toBe(VIR_NET_ERROR);
    await expect(stream.done).rejects.toBeInstanceOf(LibvirtError);
  });

  it('a daemon error mid-download fails the stream and rejects done', async () => {
    await open();
    const { call, stream } = await openStream();
    conn.stream(call, VIR_NET_CONTINUE, Buffer.from('partial'));
    conn.stream(call, VIR_NET_ERROR, (w) => encodeVirNetMessageError(w, remoteError({ code: 38, message: 'disk on fire' })));
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    await expect(pipeline(stream, sink)).rejects.toMatchObject({ kind: 'remote', message: 'disk on fire' });
    await expect(stream.done).rejects.toBeInstanceOf(LibvirtError);
    expect(client.isClosed).toBe(false);
  });

  it('an error reply to the stream call rejects callStream', async () => {
    await open();
    const pending = client.callStream(DOWNLOAD, undefined);
    conn.replyError(await conn.next(), remoteError({ code: 50, message: 'Storage volume not found' }));
    const err = (await pending.catch((e: unknown) => e)) as LibvirtError;
    expect(err.isNotFound()).toBe(true);
  });

  it('connection loss fails open streams without any unhandled error', async () => {
    await open();
    const { stream } = await openStream();
    conn.socket.destroy();
    await expect(stream.done).rejects.toMatchObject({ kind: 'transport' });
    expect(stream.destroyed).toBe(true);
  });
});

describe('upload (write stream)', () => {
  it('splits data into packets of at most the chunk size, finishes, and resolves done', async () => {
    await open();
    const { call, stream } = await openStream(UPLOAD);
    const data = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;

    const server = (async () => {
      const got: Buffer[] = [];
      for (;;) {
        const p: Packet = await conn.next();
        expect(p.header.type).toBe(VirNetMessageType.VIR_NET_STREAM);
        expect(p.header.serial).toBe(call.header.serial);
        expect(p.header.proc).toBe(UPLOAD.procedure);
        if (p.header.status === VIR_NET_OK) {
          expect(p.body.length).toBe(0);
          conn.stream(call, VIR_NET_OK);
          return got;
        }
        expect(p.header.status).toBe(VIR_NET_CONTINUE);
        expect(p.body.length).toBeGreaterThan(0);
        expect(p.body.length).toBeLessThanOrEqual(VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX);
        got.push(Buffer.from(p.body));
      }
    })();

    await pipeline(Readable.from([data.subarray(0, 1000), data.subarray(1000)]), stream);
    await stream.done;
    const got = await server;
    expect(Buffer.concat(got).equals(data)).toBe(true);
  });

  it('a daemon error mid-upload rejects done and stops the writer', async () => {
    await open();
    const { call, stream } = await openStream(UPLOAD);
    let packets = 0;
    const server = (async () => {
      for (;;) {
        const p = await conn.next();
        if (p.header.status === VIR_NET_CONTINUE && ++packets === 3) {
          conn.stream(call, VIR_NET_ERROR, (w) =>
            encodeVirNetMessageError(w, remoteError({ code: 38, message: 'No space left on device' })),
          );
          return;
        }
      }
    })();
    async function* endless() {
      for (;;) yield Buffer.alloc(64 * 1024, 1);
    }
    await expect(pipeline(Readable.from(endless()), stream)).rejects.toMatchObject({
      kind: 'remote',
      message: 'No space left on device',
    });
    await server;
    await expect(stream.done).rejects.toMatchObject({ message: 'No space left on device' });
    expect(client.isClosed).toBe(false);
  });

  it('a failed finish rejects done', async () => {
    await open();
    const { call, stream } = await openStream(UPLOAD);
    stream.end(Buffer.from('tiny'));
    const data = await conn.next();
    expect(data.body.toString()).toBe('tiny');
    const fin = await conn.next();
    expect(fin.header.status).toBe(VIR_NET_OK);
    conn.stream(call, VIR_NET_ERROR, (w) => encodeVirNetMessageError(w, remoteError({ code: 1, message: 'finish failed' })));
    await expect(stream.done).rejects.toMatchObject({ message: 'finish failed' });
  });

  it('abort() sends the STREAM/ERROR abort packet and rejects done', async () => {
    await open();
    const { call, stream } = await openStream(CONSOLE);
    stream.write(Buffer.from('hi'));
    await conn.next();
    stream.abort();
    const ab = await conn.next();
    expect(ab.header).toMatchObject({
      type: VirNetMessageType.VIR_NET_STREAM,
      status: VIR_NET_ERROR,
      serial: call.header.serial,
      proc: CONSOLE.procedure,
    });
    expect(ab.body.length).toBe(0);
    await expect(stream.done).rejects.toMatchObject({ message: /aborted by the client/ });
    // the daemon's confirmation for the forgotten stream is ignored
    conn.stream(call, VIR_NET_OK);
    const p = client.call(ECHO, 1);
    conn.reply(await conn.next(), Buffer.from([0, 0, 0, 1]));
    await expect(p).resolves.toBe(1);
  });

  it('writes to a read-only stream fail without touching the connection', async () => {
    await open();
    const { stream } = await openStream(DOWNLOAD);
    const err = await new Promise<Error>((resolve) => {
      stream.on('error', resolve);
      stream.write(Buffer.from('x'));
    });
    expect(err.message).toMatch(/read-only/);
    expect(client.isClosed).toBe(false);
  });
});
