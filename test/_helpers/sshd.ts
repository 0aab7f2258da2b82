/**
 * A throwaway OpenSSH server on 127.0.0.1 for tests: its own config, host
 * key, client key and authorized_keys in a temp dir. Must run as root (it
 * logs in as root through the local libvirtd socket). Fails loudly when sshd
 * or ssh-keygen is missing: tests never skip because of that.
 *
 *   const sshd = await startSshd();
 *   // qemu+ssh://root@127.0.0.1:${sshd.port}/system?keyfile=${sshd.keyfile}&known_hosts=${sshd.knownHosts}
 *   await sshd.stop();
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const SSHD_BIN = '/usr/sbin/sshd';

export interface SshdInstance {
  readonly port: number;
  /** unencrypted ed25519 private key authorized for root */
  readonly keyfile: string;
  /** a known_hosts file that lists this server's host key as [127.0.0.1]:port */
  readonly knownHosts: string;
  /** the host public key line: 'ssh-ed25519 AAAA... comment' */
  readonly hostKeyPub: string;
  /** the temp dir holding everything (removed by stop()) */
  readonly dir: string;
  /** sshd's stderr so far (for diagnostics) */
  log(): string;
  stop(): Promise<void>;
}

export interface StartSshdOptions {
  /** extra sshd_config lines; they take precedence over the helper's defaults */
  readonly extraConfig?: readonly string[];
  /** default 'VERBOSE' */
  readonly logLevel?: string;
  /** listen on this port (e.g. 22 for URIs without a port); default: a free random one */
  readonly port?: number;
}

function keygen(args: string[]): void {
  execFileSync('ssh-keygen', ['-q', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

function randomPort(): number {
  return 20000 + Math.floor(Math.random() * 40000);
}

/** A port in [20000, 60000) that nobody is listening on right now. */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = randomPort();
    const ok = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('freePort: no free port found in 50 tries');
}

/** Resolve once something on 127.0.0.1:port sends an SSH banner. */
function waitForBanner(port: number, child: ChildProcess, log: () => string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise<void>((resolve, reject) => {
    const attempt = (): void => {
      if (child.exitCode !== null || child.signalCode !== null) {
        reject(new Error(`sshd exited (${child.exitCode ?? child.signalCode}) before listening:\n${log()}`));
        return;
      }
      if (Date.now() > deadline) {
        reject(new Error(`sshd did not answer on 127.0.0.1:${port} within ${timeoutMs} ms:\n${log()}`));
        return;
      }
      const s = createConnection({ host: '127.0.0.1', port });
      let got = '';
      s.on('data', (d) => {
        got += d.toString('latin1');
        if (got.startsWith('SSH-')) {
          s.destroy();
          resolve();
        }
      });
      s.on('error', () => {
        s.destroy();
        setTimeout(attempt, 50);
      });
      s.on('close', () => {
        if (!got.startsWith('SSH-')) setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/** sshd (even `sshd -t`) refuses to run without its privilege separation directory; a fresh /run has none. */
export function ensureSshdPrivsepDir(): void {
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
}

export async function startSshd(opts: StartSshdOptions = {}): Promise<SshdInstance> {
  if (!existsSync(SSHD_BIN)) throw new Error(`${SSHD_BIN} not found: install openssh-server`);
  ensureSshdPrivsepDir();

  const dir = mkdtempSync(join(tmpdir(), 'vmctl-sshd-'));
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  const keyfile = join(dir, 'client_ed25519');
  const authorizedKeys = join(dir, 'authorized_keys');
  const knownHosts = join(dir, 'known_hosts');
  const config = join(dir, 'sshd_config');
  keygen(['-t', 'ed25519', '-N', '', '-C', 'vmctl-test-host', '-f', hostKey]);
  keygen(['-t', 'ed25519', '-N', '', '-C', 'vmctl-test-client', '-f', keyfile]);
  writeFileSync(authorizedKeys, readFileSync(`${keyfile}.pub`), { mode: 0o600 });
  const hostKeyPub = readFileSync(`${hostKey}.pub`, 'utf8').trim();

  let lastErr: unknown;
  for (let tries = 0; tries < 5; tries++) {
    const port = opts.port ?? (await freePort());
    writeFileSync(
      config,
      [
        // sshd uses the first value it sees: extra lines come first so they override the defaults below
        ...(opts.extraConfig ?? []),
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKey}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${authorizedKeys}`,
        'PermitRootLogin prohibit-password',
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'AllowStreamLocalForwarding yes',
        'AllowTcpForwarding local', // 'no' would also deny direct-streamlocal channels
        'X11Forwarding no',
        'PermitTTY no',
        'PrintMotd no',
        'UseDNS no',
        `LogLevel ${opts.logLevel ?? 'VERBOSE'}`,
        '',
      ].join('\n'),
    );
    // validate the config first so errors are readable
    execFileSync(SSHD_BIN, ['-t', '-f', config], { stdio: ['ignore', 'pipe', 'pipe'] });

    const child = spawn(SSHD_BIN, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
    });
    const log = (): string => stderr;
    try {
      await waitForBanner(port, child, log);
    } catch (err) {
      lastErr = err;
      child.kill('SIGKILL');
      if (/Address already in use/i.test(stderr) && opts.port === undefined) continue;
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    writeFileSync(knownHosts, `${port === 22 ? '127.0.0.1' : `[127.0.0.1]:${port}`} ${hostKeyPub}\n`, { mode: 0o600 });

    const stop = async (): Promise<void> => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    };
    return { port, keyfile, knownHosts, hostKeyPub, dir, log, stop };
  }
  rmSync(dir, { recursive: true, force: true });
  throw lastErr instanceof Error ? lastErr : new Error('startSshd failed');
}
