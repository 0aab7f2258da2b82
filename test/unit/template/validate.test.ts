/**
 * One field of a valid template changed at a time, each giving exactly the
 * expected one-line problem (the cloud-hypervisor config-test approach).
 */
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { formatProblem } from '../../../src/core/template/problems.js';
import { parseSize } from '../../../src/core/template/size.js';
import { validateTemplate, validateTemplateText } from '../../../src/core/template/validate.js';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host';

function base(): Record<string, unknown> {
  return {
    description: 'web server',
    image: 'debian-12',
    cpus: 2,
    memory: '1GiB',
    machine: 'q35',
    firmware: 'bios',
    accel: 'auto',
    disks: [
      { name: 'root', size: '10GiB', bus: 'virtio', format: 'qcow2' },
      { name: 'data', size: '1GiB', bus: 'sata', format: 'raw', image: 'empty-fs' },
    ],
    nics: [
      { type: 'user', model: 'virtio', forwards: [{ host: '127.0.0.1', hostPort: 0, guestPort: 22, proto: 'tcp' }] },
      { type: 'network', network: 'default' },
      { type: 'bridge', bridge: 'br0', mac: '52:54:00:12:34:56' },
    ],
    boot: { type: 'disk' },
    cloudInit: { user: 'vmctl', hostname: 'web', sshKeys: [KEY], packages: ['curl', 'nginx=1.22*'.replace('*', '')], runcmd: ['echo "hi" > /tmp/x'] },
    graphics: 'none',
    serial: true,
  };
}

const DELETE = Symbol('delete');

function mutate(doc: Record<string, unknown>, pointer: string, value: unknown): Record<string, unknown> {
  const segs = pointer.slice(1).split('/');
  let cur: Record<string, unknown> = doc;
  for (const s of segs.slice(0, -1)) cur = cur[s] as Record<string, unknown>;
  const last = segs[segs.length - 1]!;
  if (value === DELETE) {
    if (Array.isArray(cur)) cur.splice(Number(last), 1);
    else delete cur[last];
  } else cur[last] = value;
  return doc;
}

function problemsOf(doc: unknown): string[] {
  const text = stringify(doc);
  const r = validateTemplateText(text, 'vm-templates/web.yaml');
  return r.ok ? [] : r.problems.map(formatProblem);
}

describe('the base template', () => {
  it('is valid and normalised', () => {
    const r = validateTemplateText(stringify(base()), 'vm-templates/web.yaml');
    expect(r.problems).toEqual([]);
    if (!r.ok) return;
    expect(r.value.memoryMiB).toBe(1024);
    expect(r.value.disks.map((d) => d.sizeBytes)).toEqual([10 * 1024 ** 3, 1024 ** 3]);
  });

  it('an empty mapping gets every default', () => {
    const r = validateTemplate({});
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value).toEqual({
      cpus: 1,
      memoryMiB: 512,
      machine: 'q35',
      firmware: 'bios',
      accel: 'auto',
      disks: [{ name: 'root', sizeBytes: 10 * 1024 ** 3, bus: 'virtio', format: 'qcow2' }],
      nics: [{ type: 'user', model: 'virtio', forwards: [{ host: '127.0.0.1', hostPort: 0, guestPort: 22, proto: 'tcp' }] }],
      boot: { type: 'disk' },
      graphics: 'none',
      serial: true,
      onCrash: 'destroy',
      watchdog: 'none',
    });
  });

  it('validateTemplate does not modify its input', () => {
    const doc = { cpus: 2 };
    validateTemplate(doc);
    expect(doc).toEqual({ cpus: 2 });
  });
});

const P = 'vm-templates/web.yaml: ';

describe('one field wrong at a time', () => {
  const cases: [string, unknown, string][] = [
    ['/cpus', 0, '/cpus: must be >= 1'],
    ['/cpus', 65, '/cpus: must be <= 64'],
    ['/cpus', 1.5, '/cpus: must be an integer'],
    ['/cpus', 'two', '/cpus: must be an integer'],
    ['/memory', 32, '/memory: must be >= 64 (MiB)'],
    ['/memory', '32MiB', '/memory: must be >= 64 (MiB)'],
    ['/memory', '8TiB', '/memory: must be <= 4194304 (MiB)'],
    ['/memory', 'lots', '/memory: must be a size in MiB or like 512MiB or 2GiB'],
    ['/memory', '2KiB', '/memory: must be a size in MiB or like 512MiB or 2GiB'],
    ['/memory', '1.0001GiB', '/memory: must be a whole number of MiB'],
    ['/memory', true, '/memory: must be a size in MiB or like 512MiB or 2GiB'],
    ['/machine', 'virt', '/machine: must be one of: q35, pc'],
    ['/firmware', 'efi', '/firmware: must be one of: bios, uefi'],
    ['/accel', 'hvf', '/accel: must be one of: auto, kvm, tcg'],
    ['/cpu', 2, '/cpu: unknown field (did you mean "cpus"?)'],
    ['/memroy', 2, '/memroy: unknown field (did you mean "memory"?)'],
    ['/image', '../etc/passwd', "/image: must be an image name (letters, digits, '.', '_', '+', '-')"],
    ['/description', 'x'.repeat(1025), '/description: must be at most 1024 characters'],
    ['/description', 'bell\u0007', '/description: must be text without control characters'],
    ['/disks', 'big', '/disks: must be a list'],
    ['/disks/0/sise', '10GiB', '/disks/0/sise: unknown field (did you mean "size"?)'],
    ['/disks/0/size', DELETE, '/disks/0: missing required field "size"'],
    ['/disks/0/size', '10XB', '/disks/0/size: must be a size in GiB or like 10GiB or 512MiB'],
    ['/disks/0/size', 0, '/disks/0/size: must be >= 1 (GiB)'],
    ['/disks/0/size', '0M', '/disks/0/size: must be >= 1 MiB'],
    ['/disks/0/size', '0.5MiB', '/disks/0/size: must be a whole number of MiB'],
    ['/disks/0/size', '65TiB', '/disks/0/size: must be <= 64 TiB'],
    ['/disks/0/bus', 'nvme', '/disks/0/bus: must be one of: virtio, sata, scsi, ide'],
    ['/disks/0/bus', 'ide', '/disks/0/bus: ide is not available on machine q35: use sata or virtio, or machine: pc'],
    ['/disks/0/format', 'vmdk', '/disks/0/format: must be one of: qcow2, raw'],
    ['/disks/0/image', 'debian-11', "/disks/0/image: the first disk uses the VM's image: set the top-level 'image' (or --image) instead"],
    ['/disks/1/name', 'root', '/disks/1/name: duplicate disk name "root" (also /disks/0/name)'],
    ['/disks/1/name', 'Data', "/disks/1/name: must be a disk name (lowercase letters, digits, '-', max 31, starting with a letter)"],
    ['/nics/0/type', 'tap', '/nics/0/type: must be one of: network, bridge, user'],
    ['/nics/0/type', DELETE, '/nics/0: missing required field "type"'],
    ['/nics/0/forwards/0/host', '0.0.0.0', '/nics/0/forwards/0/host: must be a loopback address (127.x.y.z): forwards never listen on other addresses'],
    ['/nics/0/forwards/0/host', '127.0.0.256', '/nics/0/forwards/0/host: must be a loopback address (127.x.y.z): forwards never listen on other addresses'],
    ['/nics/0/forwards/0/hostPort', 80, '/nics/0/forwards/0/hostPort: must be >= 1024 (QEMU runs unprivileged), or 0 to pick a free port'],
    ['/nics/0/forwards/0/hostPort', 70000, '/nics/0/forwards/0/hostPort: must be <= 65535'],
    ['/nics/0/forwards/0/guestPort', DELETE, '/nics/0/forwards/0: missing required field "guestPort"'],
    ['/nics/0/forwards/0/proto', 'sctp', '/nics/0/forwards/0/proto: must be one of: tcp, udp'],
    ['/nics/0/model', 'ne2k', '/nics/0/model: must be one of: virtio, e1000, e1000e, rtl8139'],
    ['/nics/1/bridge', 'br0', '/nics/1/bridge: unknown field (allowed: type, network, model, mac)'],
    ['/nics/1/network', 'my net', "/nics/1/network: must be a libvirt network name (letters, digits, '.', '_', '-')"],
    ['/nics/2/bridge', DELETE, '/nics/2: missing required field "bridge"'],
    ['/nics/2/bridge', 'bridge-name-too-long', "/nics/2/bridge: must be a bridge interface name (letters, digits, '.', '_', '-', max 15)"],
    ['/nics/2/mac', 'zz', '/nics/2/mac: must be a MAC address like 52:54:00:12:34:56'],
    ['/nics/2/mac', '01:00:5e:00:00:01', '/nics/2/mac: must be a unicast MAC address (first octet even), e.g. 52:54:00:…'],
    ['/boot', { type: 'kernel' }, '/boot: missing required field "kernel"'],
    ['/boot/type', 'cdrom', '/boot/type: must be one of: disk, kernel'],
    ['/boot', { type: 'kernel', kernel: 'vmlinuz' }, '/boot/kernel: invalid path "vmlinuz": must be an absolute path'],
    ['/boot', { type: 'kernel', kernel: '/boot/vmlinuz', cmdline: 'a\nb' }, '/boot/cmdline: must be one line without control characters'],
    ['/boot', { type: 'disk', kernel: '/boot/vmlinuz' }, '/boot/kernel: unknown field (allowed: type)'],
    ['/cloudInit/user', 'Root', "/cloudInit/user: must be a Linux user name (lowercase letters, digits, '_', '-', max 32)"],
    ['/cloudInit/hostname', 'a_b', "/cloudInit/hostname: must be a host name (letters, digits, '-', max 63)"],
    ['/cloudInit/sshKeys/0', 'not a key', '/cloudInit/sshKeys/0: must be one OpenSSH public key line ("ssh-ed25519 AAAA… comment")'],
    ['/cloudInit/sshKeys/0', `${KEY}\nssh-rsa AAAA`, '/cloudInit/sshKeys/0: must be one OpenSSH public key line ("ssh-ed25519 AAAA… comment")'],
    ['/cloudInit/sshKeys', KEY, '/cloudInit/sshKeys: must be a list'],
    ['/cloudInit/packages/0', '; rm -rf /', '/cloudInit/packages/0: must be a package name (optionally =version)'],
    ['/cloudInit/runcmd/0', 'echo \u0007', '/cloudInit/runcmd/0: must be text without control characters'],
    ['/cloudInit/users', [], '/cloudInit/users: unknown field (did you mean "user"?)'],
    ['/graphics', 'sdl', '/graphics: must be one of: none, vnc, spice'],
    ['/serial', 'yes', '/serial: must be true or false'],
  ];

  it.each(cases)('%s (case %#)', (pointer, value, expected) => {
    expect(problemsOf(mutate(base(), pointer, value))).toEqual([P + expected]);
  });

  it('reports every problem, not just the first', () => {
    const doc = mutate(mutate(mutate(base(), '/cpus', 0), '/memory', 1), '/graphics', 'sdl');
    expect(problemsOf(doc)).toEqual([P + '/cpus: must be >= 1', P + '/memory: must be >= 64 (MiB)', P + '/graphics: must be one of: none, vnc, spice']);
  });

  it('no disks: booting from disk and the image both need one', () => {
    expect(problemsOf(mutate(base(), '/disks', []))).toEqual([
      P + '/disks: boot type disk needs at least one disk',
      P + '/image: the template has no disk to put the image on',
    ]);
  });

  it('duplicate forwards and MACs', () => {
    const doc = base();
    (doc.nics as unknown[]).push({ type: 'user', forwards: [{ hostPort: 2222, guestPort: 22 }, { hostPort: 2222, guestPort: 80 }] });
    (doc.nics as unknown[]).push({ type: 'network', mac: '52:54:00:12:34:56' });
    expect(problemsOf(doc)).toEqual([
      P + '/nics/3/forwards/1/hostPort: tcp 127.0.0.1:2222 is already forwarded by /nics/3/forwards/0',
      P + '/nics/4/mac: duplicate MAC address (also /nics/2/mac)',
    ]);
  });

  it('machine pc: no sata, at most 4 IDE devices with the seed cdrom', () => {
    expect(problemsOf(mutate(base(), '/machine', 'pc'))).toEqual([P + '/disks/1/bus: sata needs machine q35: use virtio or ide, or machine: q35']);
    const doc = mutate(base(), '/machine', 'pc');
    doc.disks = ['a', 'b', 'c', 'd'].map((name) => ({ name, size: 1, bus: 'ide' }));
    expect(problemsOf(doc)).toEqual([P + '/disks: machine pc has 4 IDE slots, 5 needed (one is the cloud-init cdrom): use virtio for the others']);
  });

  it('the root of the file must be a mapping', () => {
    expect(problemsOf(['cpus', 1])).toEqual([P + '/: must be a mapping of template fields (found a list)']);
    const r = validateTemplateText('', 'vm-templates/web.yaml');
    expect(r.ok ? [] : r.problems.map(formatProblem)).toEqual([P + '/: must be a mapping of template fields (the file is empty)']);
  });

  it('typed problems carry source, path, rule and the YAML position', () => {
    const r = validateTemplateText('cpus: 1\nmemory: 32\n', 'web.yaml');
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems).toEqual([{ source: 'web.yaml', path: '/memory', rule: 'minimum', message: 'must be >= 64 (MiB)', line: 2, col: 9 }]);
  });
});

describe('YAML syntax errors give file:line:col', () => {
  it.each([
    ['cpus: 1\ncpus: 2\n', 'vm-templates/web.yaml:2:1: YAML: Map keys must be unique'],
    ['cpus: "2\n', 'vm-templates/web.yaml:2:1: YAML: Missing closing "quote'],
    ['\tcpus: 1\n', 'vm-templates/web.yaml:1:1: YAML: Tabs are not allowed as indentation'],
    ['cpus: 1\n---\ncpus: 2\n', "vm-templates/web.yaml:2:1: YAML: one template per file: remove the '---' document separator"],
    ['cpus: 2\ndisks:\n  - name: root\n   size: 1\n', 'vm-templates/web.yaml:4:1: YAML: Sequence item without - indicator'],
  ])('%j', (text, expected) => {
    const r = validateTemplateText(text, 'vm-templates/web.yaml');
    expect(r.ok ? [] : r.problems.map(formatProblem)[0]).toBe(expected);
  });

  it('alias bombs are refused', () => {
    const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 0; i < 8; i++) lines.push(`${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}, *${String.fromCharCode(97 + i)}]`);
    const r = validateTemplateText(lines.join('\n') + '\n', 'bomb.yaml');
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.problems[0]!.rule).toBe('yaml');
  });
});

describe('sizes', () => {
  it.each([
    [512, 'MiB', 512n * 1024n ** 2n],
    ['512', 'MiB', 512n * 1024n ** 2n],
    ['2G', 'MiB', 2n * 1024n ** 3n],
    ['2 GiB', 'MiB', 2n * 1024n ** 3n],
    ['2gb', 'MiB', 2n * 1024n ** 3n],
    ['1.5GiB', 'MiB', 1536n * 1024n ** 2n],
    [10, 'GiB', 10n * 1024n ** 3n],
    ['1T', 'GiB', 1024n ** 4n],
  ] as const)('%j (%s) = %s bytes', (v, unit, bytes) => {
    expect(parseSize(v, unit)).toEqual({ bytes, whole: true });
  });

  it('rejects what is not a size', () => {
    for (const v of ['', 'G', '1e3', '-1G', '1,5G', '2KiB', '2 PiB', null, {}, -1, Infinity]) expect(parseSize(v, 'MiB')).toBeNull();
    expect(parseSize('0.0000001M', 'MiB')?.whole).toBe(false);
  });
});
