import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostKeyError } from '../../src/libvirt/transport/errors.js';
import {
  appendKnownHostsLine,
  checkHostKey,
  fingerprintSha256,
  formatKnownHostsLine,
  hashKnownHostsName,
  keyTypeOfBlob,
  knownHostsName,
  parseKnownHosts,
  preferredHostKeyAlgorithms,
  readKnownHostsFile,
} from '../../src/libvirt/transport/known-hosts.js';
import { decideHostKey, SUPPORTED_HOST_KEY_ALGORITHMS } from '../../src/libvirt/transport/ssh.js';

let dir: string;
interface Key {
  line: string; // 'type base64'
  blob: Buffer;
  type: string;
}
const keys: Record<'a' | 'b' | 'ecdsa' | 'rsa', Key> = {} as never;

function genKey(name: string, args: string[]): Key {
  const f = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-N', '', '-C', name, '-f', f, ...args]);
  const [type, b64] = readFileSync(`${f}.pub`, 'utf8').trim().split(' ');
  return { line: `${type} ${b64}`, blob: Buffer.from(b64!, 'base64'), type: type! };
}

function kh(text: string): ReturnType<typeof parseKnownHosts> {
  return parseKnownHosts(text);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vmctl-kh-'));
  keys.a = genKey('a', ['-t', 'ed25519']);
  keys.b = genKey('b', ['-t', 'ed25519']);
  keys.ecdsa = genKey('ecdsa', ['-t', 'ecdsa', '-b', '256']);
  keys.rsa = genKey('rsa', ['-t', 'rsa', '-b', '2048']);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('known_hosts parsing', () => {
  it('reads key types and blobs, skips comments, blank and malformed lines', () => {
    const entries = kh(
      [
        '# comment',
        '',
        `host1 ${keys.a.line} a comment here`,
        'garbage',
        'host2 ssh-ed25519 !!!notbase64',
        `host3 ssh-rsa ${keys.a.line.split(' ')[1]}`, // type disagrees with blob
        `@bogus host4 ${keys.a.line}`,
        `|2|abc|def ${keys.a.line}`,
        `  host5 ${keys.b.line}  `,
      ].join('\n'),
    );
    expect(entries.map((e) => e.line)).toEqual([3, 9]);
    expect(entries[0]!.keyType).toBe('ssh-ed25519');
    expect(entries[0]!.key.equals(keys.a.blob)).toBe(true);
    expect(entries[0]!.comment).toBe('a comment here');
    expect(keyTypeOfBlob(keys.rsa.blob)).toBe('ssh-rsa');
    expect(keyTypeOfBlob(keys.ecdsa.blob)).toBe('ecdsa-sha2-nistp256');
  });

  it('fingerprints like ssh-keygen -l', () => {
    const out = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', join(dir, 'a.pub')], { encoding: 'utf8' });
    expect(out).toContain(fingerprintSha256(keys.a.blob));
  });

  it('names hosts like OpenSSH', () => {
    expect(knownHostsName('Host.Example', 22)).toBe('host.example');
    expect(knownHostsName('127.0.0.1', 2222)).toBe('[127.0.0.1]:2222');
    expect(knownHostsName('::1', 2222)).toBe('[::1]:2222');
  });
});

describe('checkHostKey', () => {
  it('plain host names and comma lists', () => {
    const e = kh(`host1 ${keys.a.line}\nalias,host2,10.0.0.5 ${keys.a.line}\n`);
    expect(checkHostKey(e, 'host1', 22, keys.a.blob).status).toBe('known');
    expect(checkHostKey(e, 'HOST2', 22, keys.a.blob).status).toBe('known');
    expect(checkHostKey(e, '10.0.0.5', 22, keys.a.blob).status).toBe('known');
    expect(checkHostKey(e, 'host1', 22, keys.b.blob)).toMatchObject({ status: 'mismatch', name: 'host1' });
    expect(checkHostKey(e, 'elsewhere', 22, keys.a.blob).status).toBe('unknown');
  });

  it('[host]:port entries only match that port', () => {
    const e = kh(`[127.0.0.1]:2222 ${keys.a.line}\n127.0.0.1 ${keys.b.line}\n`);
    expect(checkHostKey(e, '127.0.0.1', 2222, keys.a.blob).status).toBe('known');
    expect(checkHostKey(e, '127.0.0.1', 2222, keys.b.blob).status).toBe('mismatch');
    expect(checkHostKey(e, '127.0.0.1', 22, keys.b.blob).status).toBe('known');
    expect(checkHostKey(e, '127.0.0.1', 22, keys.a.blob).status).toBe('mismatch');
    expect(checkHostKey(e, '127.0.0.1', 2223, keys.a.blob).status).toBe('unknown');
  });

  it('hashed entries written by ssh-keygen -H', () => {
    const f = join(dir, 'hashed_known_hosts');
    writeFileSync(f, `[127.0.0.1]:2222 ${keys.a.line}\nhost3 ${keys.ecdsa.line}\n`);
    execFileSync('ssh-keygen', ['-H', '-f', f], { stdio: 'ignore' });
    const text = readFileSync(f, 'utf8');
    expect(text).not.toContain('127.0.0.1');
    expect(text).not.toContain('host3');
    const e = readKnownHostsFile(f);
    expect(e.every((x) => x.hosts.kind === 'hashed')).toBe(true);
    expect(checkHostKey(e, '127.0.0.1', 2222, keys.a.blob).status).toBe('known');
    expect(checkHostKey(e, '127.0.0.1', 2222, keys.b.blob).status).toBe('mismatch');
    expect(checkHostKey(e, '127.0.0.1', 22, keys.a.blob).status).toBe('unknown');
    expect(checkHostKey(e, 'host3', 22, keys.ecdsa.blob).status).toBe('known');
  });

  it('hashed lines we write are found by ssh-keygen -F', () => {
    const f = join(dir, 'ours_known_hosts');
    writeFileSync(f, formatKnownHostsLine('127.0.0.1', 2222, keys.a.blob) + '\n');
    expect(readFileSync(f, 'utf8')).toMatch(/^\|1\|/);
    const r = spawnSync('ssh-keygen', ['-F', '[127.0.0.1]:2222', '-f', f], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('ssh-ed25519');
    const miss = spawnSync('ssh-keygen', ['-F', '127.0.0.1', '-f', f], { encoding: 'utf8' });
    expect(miss.status).not.toBe(0);
    // and a fixed salt gives a deterministic name
    const salt = Buffer.alloc(20, 7);
    expect(hashKnownHostsName('host', salt)).toBe(hashKnownHostsName('host', salt));
    expect(hashKnownHostsName('host', salt)).not.toBe(hashKnownHostsName('host2', salt));
  });

  it('@revoked beats a matching entry, also via wildcards', () => {
    const e = kh(`host4 ${keys.a.line}\n@revoked host4 ${keys.a.line}\n@revoked * ${keys.b.line}\nhost5 ${keys.b.line}\n`);
    expect(checkHostKey(e, 'host4', 22, keys.a.blob)).toMatchObject({ status: 'revoked' });
    expect(checkHostKey(e, 'host5', 22, keys.b.blob)).toMatchObject({ status: 'revoked' });
    expect(checkHostKey(e, 'anything', 22, keys.b.blob)).toMatchObject({ status: 'revoked' });
  });

  it('ignores @cert-authority lines', () => {
    const e = kh(`@cert-authority *.example.com ${keys.a.line}\n`);
    expect(checkHostKey(e, 'x.example.com', 22, keys.a.blob).status).toBe('unknown');
  });

  it('wildcards and negation', () => {
    const e = kh(`*.example.com,!bad.example.com ${keys.a.line}\nhost?.lan ${keys.b.line}\n`);
    expect(checkHostKey(e, 'good.example.com', 22, keys.a.blob).status).toBe('known');
    expect(checkHostKey(e, 'bad.example.com', 22, keys.a.blob).status).toBe('unknown');
    expect(checkHostKey(e, 'host1.lan', 22, keys.b.blob).status).toBe('known');
    expect(checkHostKey(e, 'host12.lan', 22, keys.b.blob).status).toBe('unknown');
  });

  it('a key of another type than the recorded ones is reported as other-type', () => {
    const e = kh(`host6 ${keys.ecdsa.line}\n`);
    expect(checkHostKey(e, 'host6', 22, keys.a.blob)).toMatchObject({ status: 'other-type' });
  });

  it('prefers the host key algorithms already known for the host', () => {
    const e = kh(`host7 ${keys.rsa.line}\n[host8]:2200 ${keys.ecdsa.line}\n`);
    expect(preferredHostKeyAlgorithms(e, 'host7', 22, SUPPORTED_HOST_KEY_ALGORITHMS).slice(0, 3)).toEqual(['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']);
    expect(preferredHostKeyAlgorithms(e, 'host8', 2200, SUPPORTED_HOST_KEY_ALGORITHMS)[0]).toBe('ecdsa-sha2-nistp256');
    expect(preferredHostKeyAlgorithms(e, 'other', 22, SUPPORTED_HOST_KEY_ALGORITHMS)).toEqual([...SUPPORTED_HOST_KEY_ALGORITHMS]);
  });
});

describe('decideHostKey', () => {
  const file = '/root/.ssh/known_hosts';
  it('refuses an unknown key with a clear error unless told to accept it', () => {
    const check = checkHostKey([], '127.0.0.1', 2222, keys.a.blob);
    const d = decideHostKey(check, 'strict', file, '127.0.0.1', 2222, '/root');
    expect(d.accept).toBe(false);
    if (d.accept) return;
    expect(d.error).toBeInstanceOf(HostKeyError);
    expect(d.error.code).toBe('SSH_HOSTKEY_UNKNOWN');
    expect(d.error.message).toBe(`host key for [127.0.0.1]:2222 is unknown (ssh-ed25519 ${fingerprintSha256(keys.a.blob)})`);
    expect(d.error.hint).toContain('`ssh-keyscan -p 2222 127.0.0.1 >> ~/.ssh/known_hosts`');
    expect(d.error.hint).toContain('--accept-host-key');
    expect(decideHostKey(check, 'accept-new', file, '127.0.0.1', 2222)).toEqual({ accept: true, record: true });
    expect(decideHostKey(check, 'accept-unrecorded', file, '127.0.0.1', 2222)).toEqual({ accept: true, record: false });
  });

  it('refuses a changed, other-type or revoked key under every policy', () => {
    const e = kh(`[127.0.0.1]:2222 ${keys.a.line}\nhost6 ${keys.ecdsa.line}\n@revoked host9 ${keys.b.line}\n`);
    const cases = [
      { check: checkHostKey(e, '127.0.0.1', 2222, keys.b.blob), re: /REMOTE HOST IDENTIFICATION HAS CHANGED.*man-in-the-middle/ },
      { check: checkHostKey(e, 'host6', 22, keys.a.blob), re: /records only ecdsa-sha2-nistp256 key.*man-in-the-middle/ },
      { check: checkHostKey(e, 'host9', 22, keys.b.blob), re: /@revoked/ },
    ];
    for (const { check, re } of cases) {
      for (const policy of ['strict', 'accept-new', 'accept-unrecorded'] as const) {
        const d = decideHostKey(check, policy, file, check.name, 22);
        expect(d.accept).toBe(false);
        if (d.accept) continue;
        expect(d.error).toBeInstanceOf(HostKeyError);
        expect(d.error.code).toBe('SSH_HOSTKEY_MISMATCH');
        expect(d.error.message).toMatch(re);
        expect(d.error.message).not.toContain('\n');
      }
    }
  });
});

describe('appendKnownHostsLine', () => {
  it('creates the file 0600 and its directory, and keeps lines separate', () => {
    const f = join(dir, 'new', '.ssh', 'known_hosts');
    appendKnownHostsLine(f, formatKnownHostsLine('h', 22, keys.a.blob, { hash: false }));
    expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'new', '.ssh')).mode & 0o777).toBe(0o700);
    const g = join(dir, 'no_newline');
    writeFileSync(g, `x ${keys.b.line}`);
    appendKnownHostsLine(g, formatKnownHostsLine('h', 22, keys.a.blob, { hash: false }));
    expect(readFileSync(g, 'utf8')).toBe(`x ${keys.b.line}\nh ${keys.a.line}\n`);
    expect(checkHostKey(readKnownHostsFile(g), 'h', 22, keys.a.blob).status).toBe('known');
  });

  it('a missing file reads as empty', () => {
    expect(readKnownHostsFile(join(dir, 'nope'))).toEqual([]);
  });
});
