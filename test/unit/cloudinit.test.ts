/**
 * cloud-init seed documents, per-VM keys and the seed ISO, checked with the
 * real tools: PyYAML (what cloud-init parses with, /usr/bin/python3, package
 * python3-yaml), ssh-keygen and sshd -t for the key format, genisoimage /
 * xorriso to build and isoinfo / xorriso to read the ISO back.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import {
  buildSeedDocuments,
  CLOUD_INIT_DIR,
  ensureVmKeys,
  generateHostKey,
  generateUserKey,
  hostPatternFor,
  keyPairFromPrivate,
  loadVmKeys,
  mergeCloudConfig,
  pinHostKey,
  toCloudYaml,
  writeSeedIso,
  type SeedInput,
  type SshKeyPair,
} from '../../src/core/guest/cloudinit.js';
import { VmctlError } from '../../src/core/errors.js';
import { parseCloudInitStatusJson, parseCloudInitStatusText } from '../../src/core/guest/ssh.js';
import { ensureSshdPrivsepDir } from '../_helpers/sshd.js';

const PY = '/usr/bin/python3';

let dir: string;
let host: SshKeyPair;
let user: SshKeyPair;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vmctl-cloudinit-test-'));
  host = generateHostKey('root@t1');
  user = generateUserKey('vmctl@t1');
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Parse YAML the way cloud-init does (PyYAML safe_load), returned through JSON. */
function pyyaml(text: string): unknown {
  const r = spawnSync(PY, ['-c', 'import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin.read()), sys.stdout)'], {
    input: text,
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`PyYAML failed (is python3-yaml installed?): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function yaml11(text: string): unknown {
  return YAML.parse(text, { version: '1.1' });
}

function input(over: Partial<SeedInput> = {}): SeedInput {
  return { hostname: 'web-1', instanceId: 'iid-1234', user: 'vmctl', authorizedKeys: [user.publicKey], hostKey: host, ...over };
}

function expectVmctlError(fn: () => unknown, code: string, re: RegExp): VmctlError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(VmctlError);
    expect((err as VmctlError).code).toBe(code);
    expect((err as VmctlError).message).toMatch(re);
    return err as VmctlError;
  }
  throw new Error('expected a VmctlError');
}

const ODD = [
  'yes',
  'no',
  'on',
  'off',
  'y',
  'N',
  '~',
  'null',
  '',
  '0755',
  '1:20',
  '1_000',
  '0x1F',
  '.inf',
  '.NaN',
  '12e3',
  '2001-01-01',
  '=',
  '<<',
  'a: b',
  'key: "value"',
  '# not a comment',
  'x #y',
  '- dash',
  '"double"',
  "'single'",
  "it's",
  'back\\slash',
  'multi\nline\n',
  'no final newline\nsecond',
  'trailing space \nline',
  '  leading',
  'trail ',
  '\ttab',
  'a\r\nb',
  '@at',
  '`tick',
  '%pct',
  '!tag',
  '&anchor',
  '*alias',
  '|',
  '>',
  '?',
  '{a: 1}',
  '[1, 2]',
  'é ünï 😀',
  'ctl\u0007bell',
  '---',
  '...',
];

describe('buildSeedDocuments', () => {
  it('merges per-VM values into the base files as objects', () => {
    const base = yaml11(readFileSync(join(CLOUD_INIT_DIR, 'user-data.yaml'), 'utf8')) as Record<string, unknown>;
    const docs = buildSeedDocuments(
      input({
        user: 'alice',
        authorizedKeys: [user.publicKey, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE4rfPMquyOzLFIMRnHHGhe6svPg08F8AzZbN7+EmCX6 other key'],
        packages: ['curl', 'jq'],
        runcmd: ['echo one', ['touch', '/run/two']],
        extraUserData: { write_files: [{ path: '/etc/motd', content: 'hello\n' }], timezone: 'Europe/Paris', users: [{ name: 'bob' }] },
      }),
    );
    expect(docs.userData.split('\n')[0]).toBe('#cloud-config');
    for (const parse of [yaml11, pyyaml]) {
      const ud = parse(docs.userData) as Record<string, unknown>;
      const users = ud.users as Record<string, unknown>[];
      expect(users).toHaveLength(2);
      expect(users[0]).toEqual({
        ...(base.users as Record<string, unknown>[])[0],
        name: 'alice',
        gecos: 'alice',
        ssh_authorized_keys: [user.publicKey, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE4rfPMquyOzLFIMRnHHGhe6svPg08F8AzZbN7+EmCX6 other key'],
      });
      expect(users[1]).toEqual({ name: 'bob' });
      expect(ud.ssh_keys).toEqual({ ed25519_private: host.privateKey, ed25519_public: host.publicKey });
      expect(ud.packages).toEqual(['curl', 'jq']);
      expect(ud.runcmd).toEqual(['echo one', ['touch', '/run/two']]);
      expect(ud.write_files).toEqual([{ path: '/etc/motd', content: 'hello\n' }]);
      expect(ud.timezone).toBe('Europe/Paris');
      // base keys survive with their types (booleans stay booleans)
      for (const k of ['disable_root', 'ssh_deletekeys', 'ssh_genkeytypes', 'manage_etc_hosts', 'package_update', 'package_upgrade']) {
        expect(ud[k], k).toEqual(base[k]);
      }
      expect(ud.disable_root).toBe(true);
      expect(ud.package_update).toBe(false);
      expect(parse(docs.metaData)).toEqual({ 'instance-id': 'iid-1234', 'local-hostname': 'web-1' });
      expect(parse(docs.networkConfig)).toEqual(yaml11(readFileSync(join(CLOUD_INIT_DIR, 'network-config.yaml'), 'utf8')));
      expect(parse(docs.networkConfig)).toMatchObject({ version: 2, ethernets: { eth0: { dhcp4: true } } });
    }
  });

  it('keeps the base user entry and only the injected key when nothing else is given', () => {
    const docs = buildSeedDocuments(input());
    const ud = pyyaml(docs.userData) as Record<string, unknown>;
    expect(ud.users).toEqual([expect.objectContaining({ name: 'vmctl', gecos: 'vmctl', ssh_authorized_keys: [user.publicKey], lock_passwd: true })]);
    expect(ud).not.toHaveProperty('packages');
    expect(ud).not.toHaveProperty('runcmd');
    // the private key is a block literal, byte for byte
    expect((ud.ssh_keys as Record<string, string>).ed25519_private).toBe(host.privateKey);
    expect(host.privateKey.endsWith('-----END OPENSSH PRIVATE KEY-----\n')).toBe(true);
  });

  it('round-trips odd strings exactly through the yaml library and PyYAML', () => {
    const extra = {
      write_files: ODD.map((content, i) => ({ path: `/run/odd/${i}`, content })),
      odd_map: Object.fromEntries(ODD.filter((s) => s !== '').map((s, i) => [s, `${i}:${s}`])),
    };
    const runcmd = [...ODD, ODD.slice(0, 10)];
    const docs = buildSeedDocuments(input({ extraUserData: extra, runcmd }));
    for (const parse of [yaml11, pyyaml]) {
      const ud = parse(docs.userData) as Record<string, unknown>;
      expect(ud.write_files).toEqual(extra.write_files);
      expect(ud.odd_map).toEqual(extra.odd_map);
      expect(ud.runcmd).toEqual(runcmd);
    }
    // a string that looks like YAML structure stays one string
    expect(docs.userData).not.toMatch(/^key: "value"$/m);
  });

  it('toCloudYaml quotes what PyYAML would resolve differently', () => {
    const value = { list: ODD, nested: { '=': '<<', yes: 'no', 'a: b': ['c: d'] } };
    expect(pyyaml(toCloudYaml(value))).toEqual(value);
    expect(yaml11(toCloudYaml(value))).toEqual(value);
    expect(YAML.parse(toCloudYaml(value))).toEqual(value);
  });

  it('merges maps recursively, appends lists, replaces scalars', () => {
    expect(mergeCloudConfig({ a: { b: 1, c: [1] }, d: 'x', e: [1] }, { a: { c: [2], f: true }, d: 'y', e: 'z' })).toEqual({
      a: { b: 1, c: [1, 2], f: true },
      d: 'y',
      e: 'z',
    });
  });

  it('refuses bad values', () => {
    expectVmctlError(() => buildSeedDocuments(input({ hostname: 'bad_host' })), 'INVALID_INPUT', /hostname/);
    expectVmctlError(() => buildSeedDocuments(input({ hostname: 'a\nb' })), 'INVALID_INPUT', /hostname/);
    expectVmctlError(() => buildSeedDocuments(input({ instanceId: '../etc' })), 'INVALID_INPUT', /instance-id/);
    expectVmctlError(() => buildSeedDocuments(input({ user: 'Root: x' })), 'INVALID_INPUT', /user name/);
    expectVmctlError(() => buildSeedDocuments(input({ authorizedKeys: [] })), 'INVALID_INPUT', /no SSH public key/);
    expectVmctlError(() => buildSeedDocuments(input({ authorizedKeys: [`${user.publicKey}\nssh-ed25519 AAAA x`] })), 'INVALID_INPUT', /public key/);
    expectVmctlError(() => buildSeedDocuments(input({ authorizedKeys: ['not a key'] })), 'INVALID_INPUT', /public key/);
    expectVmctlError(() => buildSeedDocuments(input({ hostKey: { privateKey: host.privateKey, publicKey: user.publicKey } })), 'INVALID_INPUT', /does not belong/);
    expectVmctlError(() => buildSeedDocuments(input({ hostKey: { privateKey: host.publicKey, publicKey: host.publicKey } })), 'INVALID_INPUT', /host private key/);
    expectVmctlError(() => buildSeedDocuments(input({ packages: ['curl; rm -rf /'] })), 'INVALID_INPUT', /package/);
    expectVmctlError(() => buildSeedDocuments(input({ extraUserData: { ssh_keys: {} } })), 'INVALID_INPUT', /ssh_keys/);
    expectVmctlError(() => buildSeedDocuments(input({ extraUserData: { users: 'bob' } })), 'INVALID_INPUT', /users/);
    expectVmctlError(() => buildSeedDocuments(input({ baseDir: join(dir, 'nope') })), 'INTERNAL', /base file/);
  });

  it('never shows the host private key in JSON, inspect output or pino logs', () => {
    const docs = buildSeedDocuments(input());
    expect(docs.userData).toContain('OPENSSH PRIVATE KEY');
    const lines: string[] = [];
    const log = pino(
      { redact: { paths: ['privateKey', '*.privateKey', 'userData'], censor: '[redacted]' } },
      { write: (s: string) => lines.push(s) },
    );
    log.info({ docs, keys: { host } }, 'seed');
    log.info(docs, 'docs');
    log.info(host, 'host key');
    for (const text of [JSON.stringify(docs), JSON.stringify({ host }), inspect(docs), inspect({ deep: { host } }), ...lines]) {
      expect(text).not.toContain('PRIVATE KEY');
      expect(text).not.toContain(host.privateKey.split('\n')[1]!);
    }
    expect(JSON.parse(JSON.stringify(docs))).toMatchObject({ userData: '[redacted]', earlyFiles: '[redacted]', metaData: docs.metaData });
    expect(docs.earlyFiles.some((f) => f.content === host.privateKey)).toBe(true);
    expect(Object.keys(docs)).not.toContain('earlyFiles');
    expect(JSON.parse(JSON.stringify(host))).toMatchObject({ publicKey: host.publicKey, privateKey: '[redacted]' });
  });
});

describe('keys', () => {
  it('generates ed25519 pairs in OpenSSH format that ssh-keygen and sshd load', () => {
    const k = generateHostKey('root@web-1');
    expect(k.privateKey).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END OPENSSH PRIVATE KEY-----\n$/);
    expect(k.publicKey).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5[A-Za-z0-9+/]+={0,2} root@web-1$/);
    const f = join(dir, 'hostkey');
    writeFileSync(f, k.privateKey, { mode: 0o600 });
    // ssh-keygen derives the same public key and fingerprint
    expect(execFileSync('ssh-keygen', ['-y', '-f', f], { encoding: 'utf8' }).trim()).toBe(k.publicKey);
    expect(execFileSync('ssh-keygen', ['-l', '-f', f], { encoding: 'utf8' })).toContain(k.fingerprint);
    // cloud-init writes ssh_keys.ed25519_private verbatim to /etc/ssh/ssh_host_ed25519_key: sshd must load it
    ensureSshdPrivsepDir();
    const t = spawnSync('/usr/sbin/sshd', ['-t', '-f', '/dev/null', '-o', `HostKey=${f}`], { encoding: 'utf8' });
    expect(t.status, t.stderr).toBe(0);
    expect(generateUserKey('').publicKey).toMatch(/^ssh-ed25519 \S+$/);
    expect(() => generateUserKey('a\nb')).toThrow(VmctlError);
  });

  it('ensureVmKeys keeps a per-VM user key, makes a new host key each time, resets known_hosts', () => {
    const state = join(dir, 'vms', 'conn', 'web-1');
    const a = ensureVmKeys(state);
    expect(statSync(state).mode & 0o777).toBe(0o700);
    expect(a.userKeyFile).toBe(join(state, 'id_ed25519'));
    expect(statSync(a.userKeyFile!).mode & 0o777).toBe(0o600);
    // every file of the state dir is owner-only, public halves included
    expect(readdirSync(state).sort()).toEqual(['id_ed25519', 'id_ed25519.pub', 'known_hosts', 'ssh_host_ed25519_key', 'ssh_host_ed25519_key.pub']);
    for (const f of readdirSync(state)) expect(statSync(join(state, f)).mode & 0o777, f).toBe(0o600);
    expect(readFileSync(a.knownHostsFile, 'utf8')).toBe('');
    expect(readFileSync(join(state, 'ssh_host_ed25519_key'), 'utf8')).toBe(a.hostKey.privateKey);
    expect(readFileSync(join(state, 'ssh_host_ed25519_key.pub'), 'utf8')).toBe(`${a.hostKey.publicKey}\n`);
    expect(execFileSync('ssh-keygen', ['-y', '-f', a.userKeyFile!], { encoding: 'utf8' }).trim()).toBe(a.userKey!.publicKey);
    expect(a.authorizedKeys).toEqual([a.userKey!.publicKey]);
    expect(a.userKey!.publicKey).toMatch(/ vmctl@web-1$/);
    expect(a.hostKey.publicKey).toMatch(/ root@web-1$/);

    pinHostKey(state, '[127.0.0.1]:2222', a.hostKey.publicKey);
    const b = ensureVmKeys(state, { hostPatterns: ['[127.0.0.1]:3333'] });
    expect(b.userKey!.publicKey).toBe(a.userKey!.publicKey);
    expect(b.hostKey.publicKey).not.toBe(a.hostKey.publicKey);
    const blob = b.hostKey.publicKey.split(' ')[1];
    expect(readFileSync(b.knownHostsFile, 'utf8')).toBe(`[127.0.0.1]:3333 ssh-ed25519 ${blob}\n`);
    expect(loadVmKeys(state)).toEqual({
      stateDir: state,
      knownHostsFile: b.knownHostsFile,
      userKeyFile: a.userKeyFile,
      hostPublicKey: b.hostKey.publicKey,
    });

    // a loosened key file is tightened again
    chmodSync(a.userKeyFile!, 0o644);
    ensureVmKeys(state);
    expect(statSync(a.userKeyFile!).mode & 0o777).toBe(0o600);
    // and so is a loosened state dir
    chmodSync(state, 0o755);
    ensureVmKeys(state);
    expect(statSync(state).mode & 0o777).toBe(0o700);
  });

  it('ensureVmKeys with the caller’s public keys keeps no user key', () => {
    const state = join(dir, 'vms', 'conn', 'byo');
    const k = ensureVmKeys(state, { userPublicKeys: [` ${user.publicKey} `] });
    expect(k.userKeyFile).toBeUndefined();
    expect(k.userKey).toBeUndefined();
    expect(k.authorizedKeys).toEqual([user.publicKey]);
    expect(existsSync(join(state, 'id_ed25519'))).toBe(false);
    expectVmctlError(() => ensureVmKeys(state, { userPublicKeys: ['ssh-ed25519 AAAA\nx'] }), 'INVALID_INPUT', /public key/);
  });

  it('pinHostKey replaces the entry for the same address and keeps the others', () => {
    const state = join(dir, 'pin');
    const k1 = generateHostKey('a');
    const k2 = generateHostKey('b');
    const b64 = (k: SshKeyPair): string => k.publicKey.split(' ')[1]!;
    const p = hostPatternFor('127.0.0.1', 40022);
    expect(p).toBe('[127.0.0.1]:40022');
    expect(hostPatternFor('Guest.Example', 22)).toBe('guest.example');
    const file = pinHostKey(state, p, k1.publicKey);
    pinHostKey(state, '[127.0.0.1]:40023', k1.publicKey);
    pinHostKey(state, p, k2.publicKey);
    expect(readFileSync(file, 'utf8')).toBe(`[127.0.0.1]:40023 ssh-ed25519 ${b64(k1)}\n[127.0.0.1]:40022 ssh-ed25519 ${b64(k2)}\n`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expectVmctlError(() => pinHostKey(state, '127.0.0.1 evil', k1.publicKey), 'INVALID_INPUT', /host pattern/);
    expectVmctlError(() => pinHostKey(state, p, 'ssh-ed25519 !!!'), 'INVALID_INPUT', /public key/);
    expectVmctlError(() => pinHostKey(state, p, `ssh-rsa ${b64(k1)}`), 'INVALID_INPUT', /public key/);
  });
});

describe('writeSeedIso', () => {
  function isoinfo(args: string[]): string {
    return execFileSync('isoinfo', args, { encoding: 'utf8' });
  }

  for (const tool of ['genisoimage', 'xorriso'] as const) {
    it(`writes a NoCloud seed with ${tool}`, async () => {
      const docs = buildSeedDocuments(input({ extraUserData: { write_files: [{ path: '/x', content: ODD.join('|') }] } }));
      const out = join(dir, `iso-${tool}`, 'seed.iso');
      const r = await writeSeedIso(docs, out, { tool });
      expect(r).toEqual({ path: out, tool });
      expect(statSync(out).mode & 0o777).toBe(0o600);
      expect(readdirSync(join(dir, `iso-${tool}`))).toEqual(['seed.iso']);
      expect(isoinfo(['-d', '-i', out])).toMatch(/^Volume id: cidata$/m);
      const early = docs.earlyFiles.map((f) => `/vmctl/${f.name}`);
      const names = ['/meta-data', '/network-config', '/user-data', '/vmctl', ...early].sort();
      expect(isoinfo(['-R', '-f', '-i', out]).trim().split('\n').sort()).toEqual(names);
      expect(isoinfo(['-J', '-f', '-i', out]).trim().split('\n').sort()).toEqual(names);
      for (const f of docs.earlyFiles) expect(isoinfo(['-R', '-x', `/vmctl/${f.name}`, '-i', out])).toBe(f.content);
      expect(isoinfo(['-R', '-x', '/user-data', '-i', out])).toBe(docs.userData);
      expect(isoinfo(['-R', '-x', '/meta-data', '-i', out])).toBe(docs.metaData);
      expect(isoinfo(['-R', '-x', '/network-config', '-i', out])).toBe(docs.networkConfig);
      const ls = spawnSync('xorriso', ['-indev', out, '-pvd_info', '-ls', '/'], { encoding: 'utf8' });
      expect(ls.status, ls.stderr).toBe(0);
      expect(ls.stdout).toMatch(/Volume Id\s*:\s*cidata/);
      expect(ls.stdout).toContain("'user-data'");
      expect(ls.stdout).toContain("'meta-data'");
      expect(ls.stdout).toContain("'network-config'");
      // rewriting replaces the file
      await writeSeedIso(buildSeedDocuments(input({ hostname: 'other' })), out, { tool });
      expect(isoinfo(['-R', '-x', '/meta-data', '-i', out])).toContain('local-hostname: other');
      expect(readdirSync(join(dir, `iso-${tool}`))).toEqual(['seed.iso']);
    });
  }

  it('says which package to install when no ISO tool is found', async () => {
    const docs = buildSeedDocuments(input());
    const out = join(dir, 'iso-none', 'seed.iso');
    for (const [opts, pkg] of [
      [{}, 'genisoimage'],
      [{ tool: 'xorriso' as const }, 'xorriso'],
    ] as const) {
      const err = await writeSeedIso(docs, out, { ...opts, pathEnv: join(dir, 'empty-path') }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(VmctlError);
      expect((err as VmctlError).code).toBe('UNSUPPORTED');
      expect((err as VmctlError).hint).toBe(`install it: apt-get install ${pkg}`);
    }
    expect(existsSync(out)).toBe(false);
  });

  it('leaves nothing behind when the tool fails', async () => {
    // genisoimage refuses a path it cannot write: a fake one that fails after writing part of its output
    const bin = join(dir, 'failing-bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(
      join(bin, 'genisoimage'),
      '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && { echo partial > "$2"; }; shift; done\necho "genisoimage: No space left on device" >&2\nexit 1\n',
      { mode: 0o755 },
    );
    const outDir = join(dir, 'iso-fail');
    const err = await writeSeedIso(buildSeedDocuments(input()), join(outDir, 'seed.iso'), { pathEnv: bin }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmctlError);
    expect((err as VmctlError).code).toBe('RESOURCE');
    expect((err as VmctlError).message).toContain('No space left');
    expect(readdirSync(outDir)).toEqual([]);
  });
});

describe('cloud-init status parsing', () => {
  // the shapes printed by Debian 12's cloud-init 22.4 (cloudinit/cmd/status.py)
  it('reads --format json', () => {
    const done = JSON.stringify({
      _schema_version: '1',
      boot_status_code: 'enabled-by-generator',
      datasource: 'nocloud',
      detail: 'DataSourceNoCloud [seed=/dev/sr0][dsmode=net]',
      errors: [],
      last_update: 'Sat, 21 Nov 2026 05:50:01 +0000',
      schemas: {},
      status: 'done',
    });
    expect(parseCloudInitStatusJson(done, 0)).toEqual({
      status: 'done',
      errors: [],
      detail: 'DataSourceNoCloud [seed=/dev/sr0][dsmode=net]',
      bootStatusCode: 'enabled-by-generator',
      datasource: 'nocloud',
      lastUpdate: 'Sat, 21 Nov 2026 05:50:01 +0000',
      exitCode: 0,
    });
    const err = parseCloudInitStatusJson(
      JSON.stringify({ status: 'error', errors: ["('scripts_user', RuntimeError('runparts: 1 failures'))"], detail: 'x', extended_status: 'error', recoverable_errors: { WARNING: ['w'] } }),
      1,
    );
    expect(err).toMatchObject({ status: 'error', errors: ["('scripts_user', RuntimeError('runparts: 1 failures'))"], extendedStatus: 'error', recoverableErrors: { WARNING: ['w'] }, exitCode: 1 });
    expect(parseCloudInitStatusJson('not json', 2)).toBeUndefined();
    expect(parseCloudInitStatusJson('{"x":1}', 0)).toBeUndefined();
  });

  it('reads --wait --long', () => {
    const text = '....\nstatus: error\nboot_status_code: enabled-by-generator\nlast_update: Thu, 01 Jan 1970\ndetail:\nboom one\nboom two\n';
    expect(parseCloudInitStatusText(text, 1)).toEqual({
      status: 'error',
      errors: ['boom one', 'boom two'],
      detail: 'boom one\nboom two',
      bootStatusCode: 'enabled-by-generator',
      lastUpdate: 'Thu, 01 Jan 1970',
      exitCode: 1,
    });
    expect(parseCloudInitStatusText('\nstatus: done\n', 0)).toMatchObject({ status: 'done', errors: [] });
    expect(parseCloudInitStatusText('garbage', 0)).toBeUndefined();
  });
});

describe('ed25519 key generation', () => {
  it('never yields a malformed key (ssh2 drops a leading zero byte of the public key about 1 time in 200)', () => {
    for (let i = 0; i < 2000; i++) {
      const k = generateHostKey('root@t');
      const back = keyPairFromPrivate(k.privateKey);
      expect(back.publicKey.split(' ')[1]).toBe(k.publicKey.split(' ')[1]);
      // 4+11 ('ssh-ed25519') + 4+32 (key) = 51 bytes
      expect(Buffer.from(k.publicKey.split(' ')[1]!, 'base64')).toHaveLength(51);
    }
  });
});
