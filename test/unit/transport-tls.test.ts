/**
 * tls.ts / tcp.ts against local node:tls / node:net servers on 127.0.0.1
 * with a throwaway PKI (openssl). No libvirtd needed.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Duplex } from 'node:stream';
import { TransportError } from '../../src/libvirt/transport/errors.js';
import { connectTransport } from '../../src/libvirt/transport/index.js';
import { connectTcpHostPort } from '../../src/libvirt/transport/tcp.js';
import { connectTlsWith, locateTlsCredentials, SYSTEM_PKI, type TlsCredentialPaths } from '../../src/libvirt/transport/tls.js';
import { parseLibvirtUri } from '../../src/libvirt/uri.js';
import { makeCa, makeCert } from '../_helpers/pki.js';

let dir: string;
/** pkipath dirs */
let good: string; // right CA + client cert
let wrongCa: string; // a CA that did not sign the server cert (+ client cert from the right CA)
let noClient: string; // right CA, no client cert
const servers: (TlsServer | NetServer)[] = [];

function pki(d: string): TlsCredentialPaths {
  return locateTlsCredentials(d);
}

interface ServerOpts {
  cert: string;
  key: string;
  ca: string;
  /** send the libvirt '\1' confirmation (default true) */
  confirm?: boolean;
  requireClientCert?: boolean;
}

/** A TLS echo server that behaves like libvirtd's handshake: '\1' after verifying the client. */
async function tlsServer(o: ServerOpts): Promise<number> {
  const srv = createTlsServer({
    cert: readFileSync(o.cert),
    key: readFileSync(o.key),
    ca: readFileSync(o.ca),
    requestCert: true,
    rejectUnauthorized: o.requireClientCert ?? true,
  });
  srv.on('secureConnection', (s: TLSSocket) => {
    s.on('error', () => {});
    if (o.confirm === false) return; // hang
    s.write(Buffer.from([1]));
    s.pipe(s);
  });
  srv.on('tlsClientError', () => {});
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return (srv.address() as { port: number }).port;
}

async function echo(stream: Duplex, payload: string): Promise<string> {
  stream.write(payload);
  let got = '';
  for await (const chunk of stream) {
    got += (chunk as Buffer).toString('latin1');
    if (got.length >= payload.length) break;
  }
  return got;
}

async function rejected(p: Promise<unknown>): Promise<TransportError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(TransportError);
    const e = err as TransportError;
    expect(e.message).not.toContain('\n');
    return e;
  }
  throw new Error('expected a rejection');
}

let port: number; // server cert for localhost + 127.0.0.1, signed by CA
let mismatchPort: number; // server cert only for wrong.example
let hangPort: number; // never confirms
let optionalClientPort: number; // does not require a client cert

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vmctl-tls-'));
  const ca = makeCa(join(dir, 'ca'), 'good');
  const other = makeCa(join(dir, 'ca'), 'other');
  const server = makeCert(ca, 'server', 'server', ['DNS:localhost', 'IP:127.0.0.1']);
  const mismatch = makeCert(ca, 'mismatch', 'server', ['DNS:wrong.example']);
  const client = makeCert(ca, 'client', 'client');

  good = join(dir, 'good');
  wrongCa = join(dir, 'wrong');
  noClient = join(dir, 'noclient');
  for (const d of [good, wrongCa, noClient]) mkdirSync(d);
  copyFileSync(ca.cert, join(good, 'cacert.pem'));
  copyFileSync(other.cert, join(wrongCa, 'cacert.pem'));
  copyFileSync(ca.cert, join(noClient, 'cacert.pem'));
  for (const d of [good, wrongCa]) {
    copyFileSync(client.cert, join(d, 'clientcert.pem'));
    copyFileSync(client.key, join(d, 'clientkey.pem'));
  }

  port = await tlsServer({ ...server, ca: ca.cert });
  mismatchPort = await tlsServer({ ...mismatch, ca: ca.cert });
  hangPort = await tlsServer({ ...server, ca: ca.cert, confirm: false });
  optionalClientPort = await tlsServer({ ...server, ca: ca.cert, requireClientCert: false });
});

afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  rmSync(dir, { recursive: true, force: true });
});

describe('tls transport', () => {
  it('connects with a CA-signed server cert, by IP and by name, and consumes the confirmation byte', async () => {
    for (const host of ['127.0.0.1', 'localhost']) {
      const t = await connectTlsWith({ host, port, credentials: pki(good), verify: true });
      expect(t.description).toBe(`tls:${host}:${port}`);
      expect(await echo(t.stream, 'hello')).toBe('hello');
      t.close();
    }
  });

  it('goes through connectTransport for qemu+tls:// URIs with ?pkipath=', async () => {
    const t = await connectTransport(parseLibvirtUri(`qemu+tls://127.0.0.1:${port}/system?pkipath=${good}`));
    expect(await echo(t.stream, 'via uri')).toBe('via uri');
    t.close();
  });

  it('refuses a server certificate from another CA', async () => {
    const e = await rejected(connectTlsWith({ host: '127.0.0.1', port, credentials: pki(wrongCa), verify: true }));
    expect(e.code).toBe('TLS_VERIFY');
    expect(e.message).toContain(`not signed by the CA in ${join(wrongCa, 'cacert.pem')}`);
    expect(e.hint).toContain('no_verify=1');
  });

  it('refuses a server certificate for another host name', async () => {
    const e = await rejected(connectTlsWith({ host: '127.0.0.1', port: mismatchPort, credentials: pki(good), verify: true }));
    expect(e.code).toBe('TLS_VERIFY');
    expect(e.message).toContain("not valid for host name '127.0.0.1'");
    const e2 = await rejected(connectTlsWith({ host: 'localhost', port: mismatchPort, credentials: pki(good), verify: true }));
    expect(e2.code).toBe('TLS_VERIFY');
    expect(e2.message).toContain("not valid for host name 'localhost'");
  });

  it('no_verify=1 skips only the server certificate verification', async () => {
    for (const [creds, p] of [
      [pki(wrongCa), port],
      [pki(good), mismatchPort],
    ] as const) {
      const t = await connectTlsWith({ host: '127.0.0.1', port: p, credentials: creds, verify: false });
      expect(await echo(t.stream, 'insecure')).toBe('insecure');
      t.close();
    }
    const t = await connectTransport(parseLibvirtUri(`qemu+tls://127.0.0.1:${mismatchPort}/system?pkipath=${wrongCa}&no_verify=1`));
    t.close();
    // the CA file is still required, like libvirt
    const e = await rejected(connectTlsWith({ host: '127.0.0.1', port, credentials: pki(join(dir, 'nowhere')), verify: false }));
    expect(e.code).toBe('TLS_CREDENTIALS');
  });

  it('names missing credential files', async () => {
    const e = await rejected(connectTlsWith({ host: '127.0.0.1', port, credentials: pki(join(dir, 'nowhere')), verify: true }));
    expect(e.code).toBe('TLS_CREDENTIALS');
    expect(e.message).toBe(`cannot read TLS CA certificate '${join(dir, 'nowhere', 'cacert.pem')}' (no such file)`);
    expect(e.hint).toContain('pkipath');
    const half: TlsCredentialPaths = { ...pki(good), clientKey: join(dir, 'nowhere', 'clientkey.pem') };
    const e2 = await rejected(connectTlsWith({ host: '127.0.0.1', port, credentials: half, verify: true }));
    expect(e2.message).toContain(`has no private key at '${join(dir, 'nowhere', 'clientkey.pem')}'`);
  });

  it('reports a server that rejects us for lack of a client certificate', async () => {
    const e = await rejected(connectTlsWith({ host: '127.0.0.1', port, credentials: pki(noClient), verify: true }));
    expect(e.code).toBe('TLS_VERIFY');
    expect(e.message).toContain('rejected our TLS client certificate');
    expect(e.hint).toContain(`no client certificate was found at ${join(noClient, 'clientcert.pem')}`);
    // a server that does not insist is fine without one
    const t = await connectTlsWith({ host: '127.0.0.1', port: optionalClientPort, credentials: pki(noClient), verify: true });
    expect(await echo(t.stream, 'anon')).toBe('anon');
    t.close();
  });

  it('times out when the server never confirms the session', async () => {
    const e = await rejected(connectTlsWith({ host: '127.0.0.1', port: hangPort, credentials: pki(good), verify: true }, { timeoutMs: 400 }));
    expect(e.code).toBe('TIMEOUT');
    expect(e.message).toContain('confirm the TLS session');
  });

  it('honours an abort signal', async () => {
    const ac = new AbortController();
    const p = connectTlsWith({ host: '127.0.0.1', port: hangPort, credentials: pki(good), verify: true }, { signal: ac.signal });
    setTimeout(() => ac.abort(new Error('user pressed ^C')), 100);
    const e = await rejected(p);
    expect(e.code).toBe('ABORTED');
    expect(e.message).toContain('user pressed ^C');
  });
});

describe('locateTlsCredentials', () => {
  const files = (set: string[]) => ({ exists: (p: string) => set.includes(p) });
  it('root uses the system PKI', () => {
    expect(locateTlsCredentials(undefined, { euid: 0, home: '/root', ...files(['/root/.pki/libvirt/cacert.pem']) })).toEqual(SYSTEM_PKI);
    expect(SYSTEM_PKI).toEqual({
      caCert: '/etc/pki/CA/cacert.pem',
      caCrl: '/etc/pki/CA/cacrl.pem',
      clientCert: '/etc/pki/libvirt/clientcert.pem',
      clientKey: '/etc/pki/libvirt/private/clientkey.pem',
    });
  });
  it('non-root uses ~/.pki/libvirt for the files that exist there (cert and key as a pair)', () => {
    const u = '/home/u/.pki/libvirt';
    expect(locateTlsCredentials(undefined, { euid: 1000, home: '/home/u', ...files([`${u}/cacert.pem`, `${u}/clientcert.pem`, `${u}/clientkey.pem`]) })).toEqual({
      caCert: `${u}/cacert.pem`,
      caCrl: SYSTEM_PKI.caCrl,
      clientCert: `${u}/clientcert.pem`,
      clientKey: `${u}/clientkey.pem`,
    });
    expect(locateTlsCredentials(undefined, { euid: 1000, home: '/home/u', ...files([`${u}/cacert.pem`, `${u}/clientcert.pem`]) })).toEqual({
      ...SYSTEM_PKI,
      caCert: `${u}/cacert.pem`,
    });
  });
  it('?pkipath=DIR is used whether the files exist or not', () => {
    expect(locateTlsCredentials('/p', { euid: 1000, home: '/home/u', ...files([]) })).toEqual({
      caCert: '/p/cacert.pem',
      caCrl: '/p/cacrl.pem',
      clientCert: '/p/clientcert.pem',
      clientKey: '/p/clientkey.pem',
    });
  });
});

describe('tcp transport', () => {
  it('connects and carries bytes', async () => {
    const srv = createNetServer((s) => s.pipe(s));
    servers.push(srv);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const p = (srv.address() as { port: number }).port;
    const t = await connectTransport(parseLibvirtUri(`qemu+tcp://127.0.0.1:${p}/system`));
    expect(t.description).toBe(`tcp:127.0.0.1:${p}`);
    expect(await echo(t.stream, 'plain')).toBe('plain');
    t.close();
  });

  it('reports a refused connection clearly', async () => {
    const srv = createNetServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const p = (srv.address() as { port: number }).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const e = await rejected(connectTcpHostPort('127.0.0.1', p));
    expect(e.code).toBe('CONNECT_FAILED');
    expect(e.message).toBe(`connection to 127.0.0.1:${p} refused`);
    expect(e.hint).toContain('listen_tcp');
  });
});
