/**
 * The RPC core against the real libvirtd on /run/libvirt/libvirt-sock.
 * A missing daemon is a FAILURE, not a skip.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { RpcClient } from '../../src/libvirt/rpc/client.js';
import { authenticate, openConnection, startKeepaliveIfSupported } from '../../src/libvirt/rpc/auth.js';
import { RemoteProcedures } from '../../src/libvirt/generated/remote.gen.js';
import { LibvirtError } from '../../src/libvirt/errors.js';

const SOCK = '/run/libvirt/libvirt-sock';

async function openClient(): Promise<{ rpc: RpcClient; remote: RemoteProcedures }> {
  const socket = connect(SOCK);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', (e) =>
      reject(new Error(`libvirtd is not reachable on ${SOCK} (${e.message}); it must be running for this test`)),
    );
  });
  const rpc = new RpcClient(socket, { description: `unix:${SOCK}` });
  const remote = new RemoteProcedures(rpc);
  await authenticate(remote);
  await startKeepaliveIfSupported(rpc, remote);
  await openConnection(remote, 'qemu:///system', 0);
  return { rpc, remote };
}

describe('RPC over the real libvirtd unix socket', () => {
  let rpc: RpcClient;
  let remote: RemoteProcedures;

  beforeAll(async () => {
    ({ rpc, remote } = await openClient());
  });

  afterAll(async () => {
    await rpc?.close();
  });

  it('authenticates, opens qemu:///system and reads the library version', async () => {
    const { libVer } = await remote.connectGetLibVersion();
    expect(libVer).toBe(9000000n);
    const { uri } = await remote.connectGetUri();
    expect(uri).toBe('qemu:///system');
  });

  it('runs 50 concurrent calls', async () => {
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        i % 2 === 0 ? remote.connectGetLibVersion().then((r) => r.libVer) : remote.connectGetHostname().then((r) => r.hostname),
      ),
    );
    expect(results.filter((r) => r === 9000000n)).toHaveLength(25);
    expect(new Set(results.filter((r) => typeof r === 'string')).size).toBe(1);
  });

  it('rejects a lookup of an unknown domain with isNotFound()', async () => {
    const err = await remote.domainLookupByName({ name: 'vmctl-no-such-domain-' + Date.now() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LibvirtError);
    const le = err as LibvirtError;
    expect(le.kind).toBe('remote');
    expect(le.isNotFound()).toBe(true);
    expect(le.message).toMatch(/no domain with matching name/);
    // the connection is unaffected
    expect((await remote.connectGetLibVersion()).libVer).toBe(9000000n);
  });

  it('uploads and downloads a volume through a stream (transient dir pool)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmctl-rpc-pool-'));
    const poolName = `vmctl-rpc-test-${process.pid}-${Date.now()}`;
    const { pool } = await remote.storagePoolCreateXml({
      xml: `<pool type='dir'><name>${poolName}</name><target><path>${dir}</path></target></pool>`,
      flags: 0,
    });
    try {
      const size = 3 * 1024 * 1024 + 4096;
      const { vol } = await remote.storageVolCreateXml({
        pool,
        xml: `<volume><name>v.raw</name><capacity unit='bytes'>${size}</capacity><target><format type='raw'/></target></volume>`,
        flags: 0,
      });
      const data = randomBytes(size);

      const up = await remote.storageVolUpload({ vol, offset: 0n, length: 0n, flags: 0 });
      await pipeline(Readable.from([data.subarray(0, 100_000), data.subarray(100_000)]), up.stream);
      await up.stream.done;

      const down = await remote.storageVolDownload({ vol, offset: 0n, length: 0n, flags: 0 });
      const parts: Buffer[] = [];
      await pipeline(
        down.stream,
        new Writable({
          write(c: Buffer, _e, cb) {
            parts.push(c);
            cb();
          },
        }),
      );
      await down.stream.done;
      expect(Buffer.concat(parts).equals(data)).toBe(true);
      await remote.storageVolDelete({ vol, flags: 0 });
    } finally {
      await remote.storagePoolDestroy({ pool });
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a second client closes gracefully and later calls reject at once', async () => {
    const c = await openClient();
    await c.rpc.close();
    const err = await c.remote.connectGetLibVersion().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LibvirtError);
    expect((err as LibvirtError).isConnectionLost()).toBe(true);
  });
});
