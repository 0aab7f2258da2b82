/**
 * A byte-forwarding proxy on 127.0.0.1 (tcp) or a unix socket that can "kill
 * the wire": once armed, the next bytes the client sends are dropped and both
 * sides are destroyed. Calls that were in flight can then never be answered,
 * which is exactly what a dead network or a killed daemon looks like to the
 * client, on every transport (tls and ssh included, since they ride on it).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type ProxyTarget = { host: string; port: number } | { path: string };

export interface KillProxy {
  /** set for a tcp listener */
  readonly port?: number;
  /** set for a unix listener */
  readonly path?: string;
  /** kill every connection at the next client→server bytes */
  arm(): void;
  /** resolves when an armed kill happened */
  readonly killed: Promise<void>;
  close(): Promise<void>;
}

export async function startKillProxy(target: ProxyTarget, listen: 'tcp' | 'unix'): Promise<KillProxy> {
  const sockets = new Set<Socket>();
  let armed = false;
  let onKilled!: () => void;
  const killed = new Promise<void>((r) => (onKilled = r));
  const server: Server = createServer((client) => {
    const upstream = 'path' in target ? createConnection(target.path) : createConnection(target.port, target.host);
    sockets.add(client).add(upstream);
    const killAll = () => {
      for (const s of sockets) s.destroy();
      onKilled();
    };
    client.on('data', (b: Buffer) => {
      if (armed) return killAll();
      upstream.write(b);
    });
    upstream.on('data', (b: Buffer) => client.write(b));
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  let dir: string | undefined;
  let path: string | undefined;
  if (listen === 'unix') {
    dir = mkdtempSync(join(tmpdir(), 'vmctl-proxy-'));
    path = join(dir, 'proxy.sock');
    await new Promise<void>((res, rej) => server.once('error', rej).listen(path, () => res()));
  } else {
    await new Promise<void>((res, rej) => server.once('error', rej).listen(0, '127.0.0.1', () => res()));
  }
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : undefined,
    path,
    arm: () => {
      armed = true;
    },
    killed,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
