import { describe, expect, it } from 'vitest';
import { TransportError } from '../../src/libvirt/transport/errors.js';
import {
  InvalidUriError,
  defaultUri,
  isLoopbackHost,
  parseLibvirtUri,
  plaintextConnectionWarning,
  resolveDefaultUri,
  uriFlag,
  uriParam,
} from '../../src/libvirt/uri.js';

interface Row {
  uri: string;
  driver: string;
  transport: 'unix' | 'tcp' | 'tls' | 'ssh';
  user?: string;
  host?: string;
  port?: number;
  path: string;
  params?: Record<string, string>;
  remoteName: string;
}

const rows: Row[] = [
  { uri: 'qemu:///system', driver: 'qemu', transport: 'unix', path: '/system', remoteName: 'qemu:///system' },
  { uri: 'qemu:///session', driver: 'qemu', transport: 'unix', path: '/session', remoteName: 'qemu:///session' },
  { uri: 'test:///default', driver: 'test', transport: 'unix', path: '/default', remoteName: 'test:///default' },
  {
    uri: 'qemu+unix:///system?socket=/path/sock',
    driver: 'qemu',
    transport: 'unix',
    path: '/system',
    params: { socket: '/path/sock' },
    remoteName: 'qemu:///system',
  },
  { uri: 'qemu+tcp://host/system', driver: 'qemu', transport: 'tcp', host: 'host', path: '/system', remoteName: 'qemu:///system' },
  { uri: 'qemu+tcp://host:16600/system', driver: 'qemu', transport: 'tcp', host: 'host', port: 16600, path: '/system', remoteName: 'qemu:///system' },
  { uri: 'qemu+tcp:///system', driver: 'qemu', transport: 'tcp', path: '/system', remoteName: 'qemu:///system' },
  {
    uri: 'qemu+tls://host.example.com/system?pkipath=/dir&no_verify=1',
    driver: 'qemu',
    transport: 'tls',
    host: 'host.example.com',
    path: '/system',
    params: { pkipath: '/dir', no_verify: '1' },
    remoteName: 'qemu:///system',
  },
  // no transport but a server: TLS, like libvirt
  { uri: 'qemu://host/system', driver: 'qemu', transport: 'tls', host: 'host', path: '/system', remoteName: 'qemu:///system' },
  {
    uri: 'qemu+ssh://user@host:2222/system?keyfile=/k&socket=/remote/sock&known_hosts=/f&no_verify=1',
    driver: 'qemu',
    transport: 'ssh',
    user: 'user',
    host: 'host',
    port: 2222,
    path: '/system',
    params: { keyfile: '/k', socket: '/remote/sock', known_hosts: '/f', no_verify: '1' },
    remoteName: 'qemu:///system',
  },
  { uri: 'qemu+ssh://root@[::1]:2222/system', driver: 'qemu', transport: 'ssh', user: 'root', host: '::1', port: 2222, path: '/system', remoteName: 'qemu:///system' },
  { uri: 'qemu+tls://[fe80::1]/system', driver: 'qemu', transport: 'tls', host: 'fe80::1', path: '/system', remoteName: 'qemu:///system' },
  { uri: 'qemu+libssh2://h/system', driver: 'qemu', transport: 'ssh', host: 'h', path: '/system', remoteName: 'qemu:///system' },
  { uri: 'qemu+libssh://h/system', driver: 'qemu', transport: 'ssh', host: 'h', path: '/system', remoteName: 'qemu:///system' },
  // transport names are case-insensitive
  { uri: 'qemu+SSH://h/system', driver: 'qemu', transport: 'ssh', host: 'h', path: '/system', remoteName: 'qemu:///system' },
  // unknown params pass through to the daemon, client-only ones (any case) are stripped
  {
    uri: 'qemu+ssh://h/system?KeyFile=/k&foo=bar&authfile=/a&sshauth=agent&no_tty=1&tls_priority=X&mode=legacy&proxy=netcat&netcat=nc&command=c',
    driver: 'qemu',
    transport: 'ssh',
    host: 'h',
    path: '/system',
    params: { KeyFile: '/k', foo: 'bar', authfile: '/a', sshauth: 'agent', no_tty: '1', tls_priority: 'X', mode: 'legacy', proxy: 'netcat', netcat: 'nc', command: 'c' },
    remoteName: 'qemu:///system?foo=bar',
  },
  // values are percent-decoded in params and re-escaped in the name, like libvirt
  {
    uri: 'qemu:///embed?root=/tmp/a%20b',
    driver: 'qemu',
    transport: 'unix',
    path: '/embed',
    params: { root: '/tmp/a b' },
    remoteName: 'qemu:///embed?root=%2Ftmp%2Fa%20b',
  },
  // ?name= overrides the name sent to the daemon
  { uri: 'qemu+ssh://h/system?name=qemu:///session', driver: 'qemu', transport: 'ssh', host: 'h', path: '/system', params: { name: 'qemu:///session' }, remoteName: 'qemu:///session' },
  // remote:// lets the daemon pick
  { uri: 'remote+ssh://h/', driver: 'remote', transport: 'ssh', host: 'h', path: '/', remoteName: '' },
  { uri: 'qemu+ssh://h', driver: 'qemu', transport: 'ssh', host: 'h', path: '', remoteName: 'qemu://' },
  // percent-decoded user, empty port, fragment kept
  { uri: 'qemu+ssh://a%40b@h:/system', driver: 'qemu', transport: 'ssh', user: 'a@b', host: 'h', path: '/system', remoteName: 'qemu:///system' },
  { uri: 'qemu:///system#frag', driver: 'qemu', transport: 'unix', path: '/system', remoteName: 'qemu:///system#frag' },
  // empty sections and "=value" sections are ignored, "name" alone has an empty value
  { uri: 'qemu:///system?&&=x&flag', driver: 'qemu', transport: 'unix', path: '/system', params: { flag: '' }, remoteName: 'qemu:///system?flag=' },
];

describe('parseLibvirtUri', () => {
  it.each(rows)('$uri', (row) => {
    const u = parseLibvirtUri(row.uri);
    expect(u.original).toBe(row.uri);
    expect(u.driver).toBe(row.driver);
    expect(u.transport).toBe(row.transport);
    expect(u.user).toBe(row.user);
    expect(u.host).toBe(row.host);
    expect(u.port).toBe(row.port);
    expect(u.path).toBe(row.path);
    expect(Object.fromEntries(u.params)).toEqual(row.params ?? {});
    expect(u.remoteName).toBe(row.remoteName);
  });

  it('keeps params in order, the last duplicate winning (as libvirt extracts them)', () => {
    const u = parseLibvirtUri('qemu+ssh://h/system?keyfile=/a&b=1&keyfile=/c');
    expect([...u.params.keys()]).toEqual(['keyfile', 'b']);
    expect(u.params.get('keyfile')).toBe('/c');
    expect(u.remoteName).toBe('qemu:///system?b=1');
  });

  it('looks params up case-insensitively and parses integer flags', () => {
    const u = parseLibvirtUri('qemu+tls://h/system?No_Verify=1&no_tty=0&PKIPATH=/p');
    expect(uriParam(u, 'no_verify')).toBe('1');
    expect(uriParam(u, 'pkipath')).toBe('/p');
    expect(uriFlag(u, 'no_verify')).toBe(true);
    expect(uriFlag(u, 'no_tty')).toBe(false);
    expect(uriFlag(u, 'no_sanity')).toBe(false);
  });

  const invalid: [string, RegExp][] = [
    ['', /empty/],
    ['system', /driver name/],
    ['/system', /driver name/],
    ['+ssh://h/system', /driver name/],
    ['qemu://system', /maybe you want qemu:\/\/\/system/],
    ['qemu://session', /maybe you want qemu:\/\/\/session/],
    ['qemu+foo:///system', /transport 'foo' not recognised/],
    ['qemu+ext:///system?command=/bin/x', /'ext' transport/],
    ['qemu+unix://host/system', /unix socket with remote server 'host'/],
    ['qemu+tcp://host:99999/system', /out of range/],
    ['qemu+tcp://host:0/system', /out of range/],
    ['qemu+tcp://host:abc/system', /not a number/],
    ['qemu+tcp://[::1/system', /unterminated/],
    ['qemu+tcp://[::1]x/system', /after the IPv6/],
    ['qemu+tcp://[host]/system', /not an IPv6 address/],
    ['qemu+tcp://::1/system', /brackets/],
    ['qemu+ssh://h/system?no_verify=yes', /no_verify/],
    ['qemu+ssh://h/system?no_verify', /no_verify/],
    ['qemu:///system?mode=fast', /unknown mode 'fast'/],
    ['qemu+ssh://h/system?proxy=x', /unknown proxy/],
    ['qemu+ssh://h/system?known_hosts_verify=maybe', /unknown known_hosts_verify/],
    ['qemu:///sys tem', /whitespace/],
    ['qemu:///system\n', /whitespace/],
  ];

  it.each(invalid)('rejects %j', (s, re) => {
    let err: unknown;
    try {
      parseLibvirtUri(s);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidUriError);
    expect(err).toBeInstanceOf(TransportError);
    const e = err as InvalidUriError;
    expect(e.code).toBe('INVALID_URI');
    expect(e.message).toMatch(re);
    expect(e.message).not.toContain('\n');
    // eslint-disable-next-line no-control-regex
    if (!/[\x00-\x1f]/.test(s)) expect(e.message).toContain(`'${s}'`);
    expect(e.hint).toBeTruthy();
  });
});

describe('defaultUri', () => {
  it('--connect beats LIBVIRT_DEFAULT_URI beats qemu:///system', () => {
    expect(defaultUri('qemu+ssh://h/system', { LIBVIRT_DEFAULT_URI: 'test:///default' })).toBe('qemu+ssh://h/system');
    expect(defaultUri(undefined, { LIBVIRT_DEFAULT_URI: 'test:///default' })).toBe('test:///default');
    expect(defaultUri(undefined, {})).toBe('qemu:///system');
  });
  it('treats empty values as unset', () => {
    expect(defaultUri('', { LIBVIRT_DEFAULT_URI: '' })).toBe('qemu:///system');
    expect(defaultUri(null, { LIBVIRT_DEFAULT_URI: 'qemu:///session' })).toBe('qemu:///session');
  });
  it('is also exported as resolveDefaultUri', () => {
    expect(resolveDefaultUri('test:///default', {})).toBe('test:///default');
  });
});

describe('isLoopbackHost', () => {
  it.each(['localhost', 'LocalHost', 'localhost.', '127.0.0.1', '127.1.2.3', '127.255.255.254', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1'])(
    '%s is loopback',
    (h) => expect(isLoopbackHost(h)).toBe(true),
  );
  it.each(['10.0.0.1', '128.0.0.1', '126.255.255.255', '0.0.0.0', '::', '::2', 'fe80::1', '::ffff:10.0.0.1', 'kvm1', 'localhost.example.com', 'mylocalhost', '127.0.0.1.nip.io', ''])(
    '%s is not loopback',
    (h) => expect(isLoopbackHost(h)).toBe(false),
  );
});

describe('plaintextConnectionWarning', () => {
  it('qemu+tcp:// to a host other than loopback warns, naming qemu+tls:// and qemu+ssh:// for that host', () => {
    expect(plaintextConnectionWarning(parseLibvirtUri('qemu+tcp://kvm1.example.com/system'))).toBe(
      'qemu+tcp://kvm1.example.com/system is not encrypted: console traffic, volume data (image uploads) and every other call ' +
        'cross the network to kvm1.example.com in clear text; use qemu+tls://kvm1.example.com/system or qemu+ssh://USER@kvm1.example.com/system',
    );
    const v6 = plaintextConnectionWarning(parseLibvirtUri('qemu+tcp://[2001:db8::5]:16509/session'));
    expect(v6).toContain('qemu+tls://[2001:db8::5]/session or qemu+ssh://USER@[2001:db8::5]/session');
    expect(plaintextConnectionWarning(parseLibvirtUri('qemu+tcp://10.254.0.12/system'))).toContain('in clear text');
  });
  it.each([
    'qemu+tcp://127.0.0.1:16509/system',
    'qemu+tcp://localhost/system',
    'qemu+tcp:///system',
    'qemu+tcp://[::1]/system',
    'qemu+tls://kvm1/system',
    'qemu+ssh://root@kvm1/system',
    'qemu:///system',
  ])('%s: no warning', (u) => {
    expect(plaintextConnectionWarning(parseLibvirtUri(u))).toBeUndefined();
  });
});
