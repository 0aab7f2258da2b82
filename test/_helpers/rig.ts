/**
 * The real integration-test rig, for vitest.
 *
 *   const rig = await ensureRig();   // in beforeAll (hookTimeout is 300 s)
 *   connect(rig.tcpUri) / connect(rig.tlsUri) / connect(rig.unixUri)
 *
 * ensureRig() runs `scripts/build-tiny-guest.sh` and `scripts/test-rig.sh up` once per test
 * process (both are idempotent and take well under a second when everything is already there),
 * then parses `scripts/test-rig.sh env`. It throws — never skips — when anything is missing.
 *
 * Rig host "host1" is a second libvirtd in private mount + cgroup namespaces, listening on
 * TCP 127.0.0.1:16509 (auth none) and TLS 127.0.0.1:16514 (client cert from the rig CA
 * required), guests are TCG only (<domain type='qemu'>). The tiny guest is direct kernel boot:
 * kernel + initrd, cmdline `console=ttyS0 quiet`, prints `VMCTL-TINY-READY ...` on ttyS0 about
 * 5 s after start, prints `VMCTL-TINY-POWEROFF` and powers off on ACPI shutdown.
 *
 * Rig hosts "mig1" and "mig2" (default VMCTL_RIG_HOSTS "host1 mig1:vmctl-rig-mig1
 * mig2:vmctl-rig-mig2") each live in their own network namespace and are "remote hosts over SSH":
 * `ensureRigSshHost()` returns one with `sshUri` = qemu+ssh://root@127.0.0.1:16522/system?keyfile=…
 * &known_hosts=… (16523 for mig2). The ssh session lands inside that host's mount + network
 * namespace: /run/libvirt/libvirt-sock is its libvirtd and direct-tcpip forwards to 127.0.0.1:N
 * reach the netns's own loopback. The netns hosts also share the private "rig network"
 * (`addr`: mig1 10.254.0.11, mig2 10.254.0.12, reachable only from the netns hosts, not from the
 * root netns); their libvirtds listen there on 16509 (tcp) and 16514 (tls, cert SANs include
 * the address and the host name), e.g. for live migration between them.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot: string = fileURLToPath(new URL('../..', import.meta.url));
const rigScript = join(repoRoot, 'scripts', 'test-rig.sh');
const tinyScript = join(repoRoot, 'scripts', 'build-tiny-guest.sh');

export interface RigHost {
  name: string;
  /** qemu+unix:///system?socket=… (reachable from the root netns even for hosts in a netns) */
  unixUri: string;
  dir: string;
  /** network namespace name, '' for the root namespace */
  netns: string;
  /** hosts in a netns only (see RigSshHost): root-netns port forwarded to the netns's sshd */
  sshPort?: number;
  /** qemu+ssh://root@127.0.0.1:<sshPort>/system?keyfile=<sshKey>&known_hosts=<knownHosts> */
  sshUri?: string;
  /** unencrypted ed25519 client key authorized for root on the host */
  sshKey?: string;
  /** known_hosts listing the host key as [127.0.0.1]:<sshPort> */
  knownHosts?: string;
  /** the host's public host key file ('ssh-ed25519 AAAA… comment') */
  sshHostKey?: string;
  /** hosts in a netns only: address on the rig network (10.254.0.11 for the first netns host) */
  addr?: string;
}

/** A rig host in its own network namespace, reachable over ssh from the root netns. */
export type RigSshHost = RigHost & Required<Pick<RigHost, 'sshPort' | 'sshUri' | 'sshKey' | 'knownHosts' | 'sshHostKey' | 'addr'>>;

export interface TinyManifest {
  kernelVersion: string;
  kernelPackage: string;
  kernelPackageVersion: string;
  busybox: string;
  cmdline: string;
  readyMarker: string;
  poweroffMarker: string;
  modules: string[];
  files: Record<'vmlinuz' | 'initrd.img', { sha256: string; size: number }>;
}

export interface RigEnv {
  rigDir: string;
  /** qemu+tcp://127.0.0.1:16509/system */
  tcpUri: string;
  /** qemu+tls://127.0.0.1:16514/system?pkipath=<pkiPath> */
  tlsUri: string;
  /** qemu+unix:///system?socket=<unixSocket> (host1) */
  unixUri: string;
  unixSocket: string;
  listenAddr: string;
  tcpPort: number;
  tlsPort: number;
  /** pkipath-style dir: cacert.pem, clientcert.pem, clientkey.pem (+ servercert.pem, serverkey.pem) */
  pkiPath: string;
  caCert: string;
  clientCert: string;
  clientKey: string;
  /** pkipath-style dir whose client cert is signed by an unrelated CA: host1 must reject it */
  untrustedPkiPath: string;
  /** host1's host_uuid (differs from the main libvirtd's) */
  hostUuid: string;
  hostDir: string;
  libvirtdLog: string;
  /** per-domain qemu logs of host1: <qemuLogDir>/<name>.log */
  qemuLogDir: string;
  hosts: RigHost[];
  tinyKernel: string;
  tinyInitrd: string;
  tinyCmdline: string;
  tinyMarker: string;
  tinyPoweroffMarker: string;
  tinyManifest: TinyManifest;
  /** every KEY=value line of `scripts/test-rig.sh env` */
  raw: Readonly<Record<string, string>>;
}

/** Parses shell-style `KEY='value'` / `KEY=value` lines (as printed by `test-rig.sh env`). */
export function parseEnvLines(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (!m) continue;
    const key = m[1] as string;
    let value = m[2] as string;
    if (value.startsWith("'")) {
      // single-quoted; an embedded ' is written as '\''
      value = value
        .split("'\\''")
        .map((part) => part.replace(/^'/, '').replace(/'$/, ''))
        .join("'");
    } else if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) {
      value = value.slice(1, -1);
    }
    out[key] = value;
  }
  return out;
}

function run(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { cwd: repoRoot, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, env: process.env },
      (err, stdout, stderr) => {
        if (err) {
          const why = err.killed ? `timed out after ${timeoutMs} ms` : `failed (${err.message.split('\n')[0]})`;
          reject(new Error(`rig: ${cmd} ${args.join(' ')} ${why}\n${String(stderr).trim()}`));
          return;
        }
        resolve(String(stdout));
      },
    );
  });
}

function need(raw: Record<string, string>, key: string): string {
  const v = raw[key];
  if (v === undefined || v === '') throw new Error(`rig: scripts/test-rig.sh env did not print ${key}`);
  return v;
}

function needFile(path: string, what: string, kind: 'file' | 'socket' = 'file'): string {
  if (!existsSync(path)) throw new Error(`rig: ${what} missing: ${path}`);
  const st = statSync(path);
  if (kind === 'socket' ? !st.isSocket() : !st.isFile() || st.size === 0) {
    throw new Error(`rig: ${what} is not a ${kind === 'socket' ? 'socket' : 'non-empty file'}: ${path}`);
  }
  return path;
}

function needPort(raw: Record<string, string>, key: string): number {
  const n = Number(need(raw, key));
  if (!Number.isInteger(n) || n <= 0 || n > 65535) throw new Error(`rig: ${key} is not a port: ${raw[key]}`);
  return n;
}

/** Parses and checks `test-rig.sh env` output; throws if anything the tests need is missing. */
export function rigEnvFrom(raw: Record<string, string>): RigEnv {
  const pkiPath = need(raw, 'RIG_PKI_PATH');
  for (const f of ['cacert.pem', 'clientcert.pem', 'clientkey.pem', 'servercert.pem', 'serverkey.pem']) {
    needFile(join(pkiPath, f), `rig PKI ${f}`);
  }
  const untrustedPkiPath = need(raw, 'RIG_UNTRUSTED_PKI_PATH');
  for (const f of ['cacert.pem', 'clientcert.pem', 'clientkey.pem']) {
    needFile(join(untrustedPkiPath, f), `untrusted PKI ${f}`);
  }
  const hosts: RigHost[] = need(raw, 'RIG_HOSTS')
    .split(/\s+/)
    .filter(Boolean)
    .map((name) => {
      const k = name.toUpperCase().replace(/-/g, '_');
      const host: RigHost = {
        name,
        unixUri: need(raw, `RIG_HOST_${k}_UNIX_URI`),
        dir: need(raw, `RIG_HOST_${k}_DIR`),
        netns: raw[`RIG_HOST_${k}_NETNS`] ?? '',
      };
      if (host.netns === '') return host;
      return {
        ...host,
        sshPort: needPort(raw, `RIG_HOST_${k}_SSH_PORT`),
        sshUri: need(raw, `RIG_HOST_${k}_SSH_URI`),
        sshKey: needFile(need(raw, `RIG_HOST_${k}_SSH_KEY`), `rig host ${name} ssh client key`),
        knownHosts: needFile(need(raw, `RIG_HOST_${k}_SSH_KNOWN_HOSTS`), `rig host ${name} known_hosts`),
        sshHostKey: needFile(need(raw, `RIG_HOST_${k}_SSH_HOST_KEY`), `rig host ${name} ssh host key`),
        addr: need(raw, `RIG_HOST_${k}_ADDR`),
      };
    });
  const tinyManifestPath = needFile(need(raw, 'TINY_MANIFEST'), 'tiny guest manifest');
  let tinyManifest: TinyManifest;
  try {
    tinyManifest = JSON.parse(readFileSync(tinyManifestPath, 'utf8')) as TinyManifest;
  } catch (e) {
    throw new Error(`rig: cannot parse ${tinyManifestPath}: ${(e as Error).message}`);
  }
  return {
    rigDir: need(raw, 'RIG_DIR'),
    tcpUri: need(raw, 'RIG_TCP_URI'),
    tlsUri: need(raw, 'RIG_TLS_URI'),
    unixUri: need(raw, 'RIG_UNIX_URI'),
    unixSocket: needFile(need(raw, 'RIG_UNIX_SOCKET'), 'rig host1 libvirt socket', 'socket'),
    listenAddr: need(raw, 'RIG_LISTEN_ADDR'),
    tcpPort: needPort(raw, 'RIG_TCP_PORT'),
    tlsPort: needPort(raw, 'RIG_TLS_PORT'),
    pkiPath,
    caCert: needFile(need(raw, 'RIG_CA_CERT'), 'rig CA certificate'),
    clientCert: needFile(need(raw, 'RIG_CLIENT_CERT'), 'rig client certificate'),
    clientKey: needFile(need(raw, 'RIG_CLIENT_KEY'), 'rig client key'),
    untrustedPkiPath,
    hostUuid: need(raw, 'RIG_HOST_UUID'),
    hostDir: need(raw, 'RIG_HOST_DIR'),
    libvirtdLog: need(raw, 'RIG_LIBVIRTD_LOG'),
    qemuLogDir: need(raw, 'RIG_QEMU_LOG_DIR'),
    hosts,
    tinyKernel: needFile(need(raw, 'TINY_KERNEL'), 'tiny guest kernel'),
    tinyInitrd: needFile(need(raw, 'TINY_INITRD'), 'tiny guest initrd'),
    tinyCmdline: need(raw, 'TINY_CMDLINE'),
    tinyMarker: need(raw, 'TINY_READY_MARKER'),
    tinyPoweroffMarker: need(raw, 'TINY_POWEROFF_MARKER'),
    tinyManifest,
    raw: Object.freeze({ ...raw }),
  };
}

/**
 * The rig host reachable over ssh (in its own netns): `name`, or the first such host. Throws
 * when there is none (e.g. VMCTL_RIG_HOSTS without a NAME:NETNS entry).
 */
export function rigSshHost(rig: RigEnv, name?: string): RigSshHost {
  const host = rig.hosts.find((h) => h.sshUri !== undefined && (name === undefined || h.name === name));
  if (!host) {
    const set = process.env['VMCTL_RIG_HOSTS'];
    throw new Error(
      `rig: no rig host${name ? ` named ${name}` : ''} reachable over ssh among [${rig.hosts.map((h) => h.name).join(', ')}]: ` +
        `such a host needs its own netns (NAME:NETNS in VMCTL_RIG_HOSTS${set !== undefined ? `, which is set to '${set}'` : ''}; ` +
        `the default is 'host1 mig1:vmctl-rig-mig1 mig2:vmctl-rig-mig2')`,
    );
  }
  return host as RigSshHost;
}

let pending: Promise<RigEnv> | undefined;

/**
 * Builds the tiny guest and brings the rig up (once per process), returns its description.
 * A failure is not cached: the next call tries again.
 */
export function ensureRig(): Promise<RigEnv> {
  if (!pending) {
    pending = (async () => {
      if (process.platform !== 'linux') throw new Error('rig: the integration rig needs Linux');
      if (typeof process.getuid === 'function' && process.getuid() !== 0) {
        throw new Error('rig: the integration rig must run as root (it starts libvirtd in namespaces)');
      }
      await run(tinyScript, [], 600_000);
      await run(rigScript, ['up'], 240_000);
      return rigEnvFrom(parseEnvLines(await run(rigScript, ['env'], 30_000)));
    })();
    pending.catch(() => {
      pending = undefined;
    });
  }
  return pending;
}

/** ensureRig(), then the rig host reachable over ssh (see rigSshHost). */
export async function ensureRigSshHost(name?: string): Promise<{ rig: RigEnv; host: RigSshHost }> {
  const rig = await ensureRig();
  return { rig, host: rigSshHost(rig, name) };
}

/**
 * Polls a file (e.g. a `<serial type='file'>` log) until it contains `needle`; returns the
 * content. Throws after `timeoutMs`, quoting the file's tail.
 */
export async function waitForFileContains(path: string, needle: string, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let content = '';
  for (;;) {
    try {
      content = await readFile(path, 'utf8');
    } catch {
      content = '';
    }
    if (content.includes(needle)) return content;
    if (Date.now() >= deadline) {
      throw new Error(`rig: '${needle}' did not appear in ${path} within ${timeoutMs} ms; tail:\n${content.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
