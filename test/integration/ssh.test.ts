/**
 * src/core/ssh.ts against a real, throwaway OpenSSH server on 127.0.0.1
 * (test/_helpers/sshd.ts): strict host key pinning, exec with streams and
 * exit codes, pty/shell, and waitForSsh through the stages a booting guest
 * goes through (nothing listening → forward accepting and dropping → silent
 * port → sshd refusing our key → ready), using a TCP forwarder in front of
 * the real sshd the way QEMU's user-mode hostfwd sits in front of the guest.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateHostKey, generateUserKey, hostPatternFor, pinHostKey } from '../../src/core/guest/cloudinit.js';
import { VmctlError } from '../../src/core/errors.js';
import {
  connectGuest,
  connectRunningGuest,
  guestCapture,
  guestExec,
  guestShell,
  HEDGE_MS,
  MAX_IN_FLIGHT,
  sshStageOf,
  waitForSsh,
  type GuestConnection,
  type GuestTarget,
  type SshAttempt,
} from '../../src/core/guest/ssh.js';
import { fingerprintSha256 } from '../../src/libvirt/transport/known-hosts.js';
import { freePort, startSshd, type SshdInstance } from '../_helpers/sshd.js';

let sshd: SshdInstance;
let state: string;
let target: GuestTarget;
let conn: GuestConnection;

function sink(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  return {
    stream: new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
      },
    }),
    text: () => Buffer.concat(chunks).toString('utf8'),
  };
}

async function refused(p: Promise<unknown>): Promise<VmctlError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(VmctlError);
  return err as VmctlError;
}

/**
 * A forward in front of sshd, as QEMU's user-mode hostfwd: connection n (1-based) for which
 * `silent(n)` holds is accepted and stays silent (its SYN towards the guest lost); the others reach sshd.
 */
async function silentForward(silent: (n: number) => boolean): Promise<{ port: number; made: () => number; close: () => Promise<void> }> {
  const port = await freePort();
  const held: Socket[] = [];
  let made = 0;
  const server = createServer((s) => {
    made++;
    s.on('error', () => {});
    if (silent(made)) {
      s.pause();
      held.push(s);
      return;
    }
    const up = netConnect(sshd.port, '127.0.0.1');
    up.on('error', () => s.destroy());
    s.on('close', () => up.destroy());
    s.pipe(up).pipe(s);
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  return {
    port,
    made: () => made,
    close: async () => {
      for (const s of held) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

beforeAll(async () => {
  sshd = await startSshd({ extraConfig: ['PermitTTY yes'] });
  state = mkdtempSync(join(tmpdir(), 'vmctl-ssh-core-test-'));
  pinHostKey(state, hostPatternFor('127.0.0.1', sshd.port), sshd.hostKeyPub);
  target = {
    host: '127.0.0.1',
    port: sshd.port,
    user: 'root',
    privateKey: readFileSync(sshd.keyfile),
    knownHostsFile: join(state, 'known_hosts'),
    timeoutMs: 10_000,
  };
  conn = await connectGuest(target);
});

afterAll(async () => {
  conn?.close();
  await sshd?.stop();
  if (state) rmSync(state, { recursive: true, force: true });
});

describe('connectGuest', () => {
  it('connects with the pinned host key', () => {
    expect(conn.hostKey).toEqual({ type: 'ssh-ed25519', fingerprint: fingerprintSha256(Buffer.from(sshd.hostKeyPub.split(' ')[1]!, 'base64')) });
    expect(conn.hostPattern).toBe(`[127.0.0.1]:${sshd.port}`);
    expect(conn.serverIdent).toMatch(/^SSH-2\.0-OpenSSH_/);
  });

  it('refuses a host key that differs from the pinned one, before authenticating', async () => {
    const other = generateHostKey('not-the-guest');
    const dir = mkdtempSync(join(state, 'mismatch-'));
    pinHostKey(dir, hostPatternFor('127.0.0.1', sshd.port), other.publicKey);
    const before = sshd.log();
    const err = await refused(connectGuest({ ...target, knownHostsFile: join(dir, 'known_hosts') }));
    expect(err.code).toBe('HOST_KEY');
    expect(sshStageOf(err)).toBe('host-key');
    expect(err.message).toContain('HOST KEY MISMATCH');
    expect(err.message).toContain(other.fingerprint);
    expect(err.message).toContain(conn.hostKey.fingerprint);
    expect(err.hint).toMatch(/refusing/);
    // no login attempt reached sshd
    expect(sshd.log().slice(before.length)).not.toMatch(/Accepted publickey|Failed publickey/);
  });

  it('refuses when nothing is pinned for the address (no trust on first use)', async () => {
    const dir = mkdtempSync(join(state, 'unpinned-'));
    // pinned for another port only, and a missing file
    pinHostKey(dir, hostPatternFor('127.0.0.1', sshd.port + 1), sshd.hostKeyPub);
    for (const knownHostsFile of [join(dir, 'known_hosts'), join(dir, 'missing')]) {
      const err = await refused(connectGuest({ ...target, knownHostsFile }));
      expect(err.code).toBe('HOST_KEY');
      expect(err.message).toMatch(/no host key pinned for \[127\.0\.0\.1\]:\d+/);
    }
    // the same key under an explicit host pattern is accepted
    const c = await connectGuest({ ...target, knownHostsFile: join(dir, 'known_hosts'), hostPattern: hostPatternFor('127.0.0.1', sshd.port + 1) });
    c.close();
    await c.closed;
  });

  it('reports a refused login key as an auth failure after the host key check', async () => {
    const err = await refused(connectGuest({ ...target, privateKey: generateUserKey('stranger').privateKey }));
    expect(err.code).toBe('AUTH');
    expect(sshStageOf(err)).toBe('auth');
  });

  it('reports a closed port', async () => {
    const port = await freePort();
    const err = await refused(connectGuest({ ...target, port }));
    expect(err.code).toBe('CONNECTION');
    expect(sshStageOf(err)).toBe('port-closed');
  });
});

describe('guestExec', () => {
  it('wires stdin, stdout and stderr and propagates the exit code', async () => {
    const out = sink();
    const errOut = sink();
    const code = await guestExec(conn, "sh -c 'cat; echo err >&2; exit 3'", {
      stdin: Readable.from([Buffer.from('hello\n'), Buffer.from('wörld: "x"\n')]),
      stdout: out.stream,
      stderr: errOut.stream,
    });
    expect(code).toBe(3);
    expect(out.text()).toBe('hello\nwörld: "x"\n');
    expect(errOut.text()).toBe('err\n');
  });

  it('closes stdin when none is given, and carries large output', async () => {
    const out = sink();
    expect(await guestExec(conn, 'cat; head -c 3000000 /dev/zero | tr "\\0" a', { stdout: out.stream })).toBe(0);
    expect(out.text()).toHaveLength(3_000_000);
  });

  it('maps a signal to 128+n', async () => {
    expect(await guestExec(conn, 'kill -TERM $$')).toBe(143);
    expect(await guestExec(conn, 'kill -KILL $$')).toBe(137);
  });

  it('allocates a pty on request', async () => {
    const r = sink();
    expect(await guestExec(conn, 'tty; echo "$TERM"; stty size', { pty: true, stdout: r.stream, term: 'vt100' })).toBe(0);
    expect(r.text()).toMatch(/^\/dev\/pts\/\d+\r\nvt100\r\n24 80\r\n$/);
  });

  it('aborts a running command', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    const t0 = Date.now();
    const err = await refused(guestExec(conn, 'sleep 30', { signal: ac.signal }));
    expect(err.code).toBe('ABORTED'); // one code for every interruption
    expect(Date.now() - t0).toBeLessThan(5000);
    // the connection stays usable
    expect((await guestCapture(conn, 'echo ok')).stdout).toBe('ok\n');
  });

  it('guestCapture collects output and times out', async () => {
    expect(await guestCapture(conn, 'cat; echo e >&2; exit 4', { stdin: 'in' })).toEqual({ code: 4, stdout: 'in', stderr: 'e\n' });
    const err = await refused(guestCapture(conn, 'sleep 30', { timeoutMs: 300 }));
    expect(err.code).toBe('TIMEOUT');
  });
});

describe('guestShell', () => {
  it('runs an interactive shell on a pty and returns its exit status', async () => {
    const stdin = new PassThrough();
    const out = sink();
    const p = guestShell(conn, { stdin, stdout: out.stream, rows: 30, cols: 100 });
    stdin.write('stty size; exit 7\n');
    expect(await p).toBe(7);
    expect(out.text()).toContain('30 100');
  });
});

describe('waitForSsh', () => {
  it('fails at once on a host key mismatch', async () => {
    const dir = mkdtempSync(join(state, 'wait-mismatch-'));
    pinHostKey(dir, hostPatternFor('127.0.0.1', sshd.port), generateHostKey('x').publicKey);
    const attempts: SshAttempt[] = [];
    const err = await refused(
      waitForSsh({ ...target, knownHostsFile: join(dir, 'known_hosts') }, { timeoutMs: 30_000, onAttempt: (a) => attempts.push(a) }),
    );
    expect(err.code).toBe('HOST_KEY');
    expect(attempts.map((a) => a.stage)).toEqual(['host-key']);
  });

  it('waits through a port that opens later, a silent port and a refused login', async () => {
    const port = await freePort();
    // phases, like a booting guest behind QEMU's hostfwd
    let phase: 'closed' | 'drop' | 'silent' | 'nokey' | 'proxy' = 'closed';
    const sockets = new Set<Socket>();
    let server: Server | undefined;
    const authorizedKeys = join(sshd.dir, 'authorized_keys');
    const savedKeys = readFileSync(authorizedKeys);
    const listen = (): Promise<void> =>
      new Promise((resolve, reject) => {
        server = createServer((s) => {
          sockets.add(s);
          s.on('close', () => sockets.delete(s));
          s.on('error', () => {});
          if (phase === 'drop') s.destroy();
          else if (phase === 'silent') return;
          else {
            const up = netConnect(sshd.port, '127.0.0.1');
            up.on('error', () => s.destroy());
            s.pipe(up).pipe(s);
          }
        });
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => resolve());
      });
    const attempts: SshAttempt[] = [];
    const stagesSeen = (): string[] => [...new Set(attempts.map((a) => a.stage))];
    const until = async (stage: string): Promise<void> => {
      const deadline = Date.now() + 20_000;
      while (!attempts.some((a) => a.stage === stage)) {
        if (Date.now() > deadline) throw new Error(`never saw stage ${stage}: ${stagesSeen().join(',')}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const dir = mkdtempSync(join(state, 'wait-'));
    pinHostKey(dir, hostPatternFor('127.0.0.1', port), sshd.hostKeyPub);
    try {
      const waiting = waitForSsh(
        { ...target, port, knownHostsFile: join(dir, 'known_hosts') },
        { timeoutMs: 60_000, intervalMs: 200, attemptTimeoutMs: 1000, onAttempt: (a) => attempts.push(a) },
      );
      waiting.catch(() => {});
      await until('port-closed');
      phase = 'drop';
      await listen();
      const n = attempts.length;
      await until('port-closed');
      while (attempts.length < n + 2) await new Promise((r) => setTimeout(r, 50));
      phase = 'silent';
      await until('no-banner');
      writeFileSync(authorizedKeys, '');
      phase = 'nokey';
      await until('auth');
      writeFileSync(authorizedKeys, savedKeys);
      phase = 'proxy';
      const c = await waiting;
      expect(stagesSeen()).toEqual(['port-closed', 'no-banner', 'auth', 'ready']);
      expect(attempts.at(-1)!.stage).toBe('ready');
      expect(c.hostKey.fingerprint).toBe(conn.hostKey.fingerprint);
      expect((await guestCapture(c, 'echo through-the-forward')).stdout).toBe('through-the-forward\n');
      c.close();
    } finally {
      writeFileSync(authorizedKeys, savedKeys);
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    }
  });

  it('hedges silent attempts up to MAX_IN_FLIGHT, and when they all get through at once the first banner makes the others go', async () => {
    // like QEMU's forward before the guest has its address: connections are accepted and stay silent
    // (their SYN towards the guest is lost); once the guest is reachable every pending one gets through
    // at the same moment (each a pre-auth sshd), and closing one earlier would not have taken it back
    const port = await freePort();
    const silent: Array<{ s: Socket; connect: () => void }> = [];
    let reachable = false;
    let made = 0;
    const toSshd = new Set<Socket>();
    const forward = (s: Socket) => {
      const up = netConnect(sshd.port, '127.0.0.1');
      toSshd.add(up);
      up.on('close', () => toSshd.delete(up));
      up.on('error', () => s.destroy());
      s.on('close', () => up.destroy());
      s.pipe(up).pipe(s);
    };
    const server = createServer((s) => {
      made++;
      s.on('error', () => {});
      if (reachable) return forward(s);
      s.pause();
      silent.push({ s, connect: () => forward(s) });
    });
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
    const dir = mkdtempSync(join(state, 'wait-hedge-'));
    pinHostKey(dir, hostPatternFor('127.0.0.1', port), sshd.hostKeyPub);
    try {
      const waiting = waitForSsh({ ...target, port, knownHostsFile: join(dir, 'known_hosts') }, { timeoutMs: 60_000, attemptTimeoutMs: 30_000 });
      waiting.catch(() => {});
      while (made < MAX_IN_FLIGHT) await new Promise((r) => setTimeout(r, 50));
      // hedged every HEDGE_MS, never more than MAX_IN_FLIGHT (each one would reach sshd later)
      await new Promise((r) => setTimeout(r, HEDGE_MS * 2));
      expect(made).toBe(MAX_IN_FLIGHT);
      reachable = true;
      for (const x of silent) x.connect();
      const c = await waiting;
      expect(c.hostKey.fingerprint).toBe(conn.hostKey.fingerprint);
      // the others were closed once the first had its banner: one connection to sshd is left
      const until = Date.now() + 5000;
      while (toSshd.size > 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      expect(toSshd.size).toBe(1);
      c.close();
    } finally {
      for (const x of silent) x.s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it("tries at once when the guest says sshd is ready (readyHint), beside a silent attempt", async () => {
    // a silent first attempt (its SYN lost, as before the guest has its address); with the hedge far
    // away only the hint can make the second attempt, which then gets through
    let reachable = false;
    const fwd = await silentForward(() => !reachable);
    const { port } = fwd;
    const dir = mkdtempSync(join(state, 'wait-hint-'));
    pinHostKey(dir, hostPatternFor('127.0.0.1', port), sshd.hostKeyPub);
    let ready!: (v: boolean) => void;
    const readyHint = new Promise<boolean>((r) => (ready = r));
    const attempts: SshAttempt[] = [];
    try {
      const waiting = waitForSsh(
        { ...target, port, knownHostsFile: join(dir, 'known_hosts') },
        { timeoutMs: 60_000, attemptTimeoutMs: 30_000, hedgeMs: 600_000, readyHint, onAttempt: (a) => attempts.push(a) },
      );
      waiting.catch(() => {});
      while (fwd.made() < 1) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 300));
      expect(fwd.made()).toBe(1); // nothing hedged yet
      reachable = true;
      ready(true);
      const c = await waiting;
      expect(fwd.made()).toBe(2);
      expect(attempts.map((a) => [a.attempt, a.stage])).toEqual([[2, 'ready']]);
      expect(c.hostKey.fingerprint).toBe(conn.hostKey.fingerprint);
      c.close();
    } finally {
      await fwd.close();
    }
  });

  it('times out naming the last stage, and honours an abort signal', async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(state, 'wait-timeout-'));
    pinHostKey(dir, hostPatternFor('127.0.0.1', port), sshd.hostKeyPub);
    const t = { ...target, port, knownHostsFile: join(dir, 'known_hosts') };
    const err = await refused(waitForSsh(t, { timeoutMs: 1500, intervalMs: 200 }));
    expect(err.code).toBe('TIMEOUT');
    expect(err.message).toMatch(/not ready after 2 s \(last: port closed/);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 500);
    const aborted = await refused(waitForSsh(t, { timeoutMs: 30_000, signal: ac.signal }));
    expect(aborted.details?.aborted).toBe(true);
    expect(aborted.code).toBe('ABORTED');
  });
});

describe('connectRunningGuest (vmctl ssh, lab checks)', () => {
  it('gets past a connection the forward accepted that never reaches sshd; fails at once on a refused port or login', async () => {
    // QEMU's forward after a migration or with the guest's CPU starved: the first connection is
    // accepted and stays silent (its SYN towards the guest lost), the next ones get through
    const fwd = await silentForward((n) => n === 1);
    const { port } = fwd;
    const dir = mkdtempSync(join(state, 'running-'));
    pinHostKey(dir, hostPatternFor('127.0.0.1', port), sshd.hostKeyPub);
    const t = { ...target, port, knownHostsFile: join(dir, 'known_hosts') };
    try {
      const started = Date.now();
      const c = await connectRunningGuest(t, { timeoutMs: 20_000 });
      expect(fwd.made()).toBe(2);
      expect(Date.now() - started).toBeLessThan(HEDGE_MS + 5000); // the hedge, not the silent one's timeout
      expect((await guestCapture(c, 'echo hedged')).stdout).toBe('hedged\n');
      c.close();
      // a refused login is the answer at once (not retried until the deadline)
      const t0 = Date.now();
      const auth = await refused(connectRunningGuest({ ...t, privateKey: generateUserKey('stranger').privateKey }, { timeoutMs: 20_000 }));
      expect(sshStageOf(auth)).toBe('auth');
      expect(Date.now() - t0).toBeLessThan(10_000);
    } finally {
      await fwd.close();
    }
    // nothing listening (the VM is off): at once, as connection refused
    const t1 = Date.now();
    const closed = await refused(connectRunningGuest(t, { timeoutMs: 20_000 }));
    expect(sshStageOf(closed)).toBe('port-closed');
    expect(closed.message).toMatch(/connection refused/);
    expect(Date.now() - t1).toBeLessThan(5000);
  });
});
