/**
 * Domain XML: golden files for every shipped template (UPDATE_GOLDEN=1
 * rewrites them), every generated document validated against libvirt's own
 * RELAX NG schema with virt-xml-validate (a missing tool fails the test), and
 * escaping of hostile strings checked by parsing the XML back.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { XMLParser } from 'fast-xml-parser';
import { afterAll, describe, expect, it } from 'vitest';
import { buildDomainXml, commandlineNicAddress, parseVmctlMetadata, QEMU_XMLNS, userForwardGuestAddress, VMCTL_XMLNS } from '../../../src/core/vm/domain-xml.js';
import { VmctlError } from '../../../src/core/errors.js';
import { diskVolumeName, seedVolumeName } from '../../../src/core/storage/volume.js';
import { listTemplates, SHIPPED_TEMPLATE_DIR } from '../../../src/core/template/dirs.js';
import { loadTemplate } from '../../../src/core/template/load.js';
import { validateTemplate } from '../../../src/core/template/validate.js';
import { buildVmSpec, DEBIAN_OVMF, type DomainType, type ResolvedTemplate, type VmSpec } from '../../../src/core/template/model.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const GOLDEN = path.join(HERE, 'golden');
const UPDATE = process.env.UPDATE_GOLDEN === '1';

const work = mkdtempSync(path.join(tmpdir(), 'vmctl-domxml-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

let seq = 0;
/** Validate with libvirt's schema; returns virt-xml-validate's output on failure. */
function libvirtValidate(xml: string): { ok: boolean; output: string } {
  const file = path.join(work, `d${seq++}.xml`);
  writeFileSync(file, xml);
  const r = spawnSync('virt-xml-validate', [file, 'domain'], { encoding: 'utf8', timeout: 60_000 });
  if (r.error) {
    throw new Error(`cannot run virt-xml-validate (${r.error.message}): install libvirt-clients (scripts/setup-host.sh)`);
  }
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

function expectValid(xml: string): void {
  const r = libvirtValidate(xml);
  expect(r.output, 'virt-xml-validate output').toMatch(/validates/);
  expect(r.ok, r.output).toBe(true);
}

function specFor(t: ResolvedTemplate, o: { domainType?: DomainType; name?: string; loader?: boolean } = {}): VmSpec {
  const name = o.name ?? `golden-${t.name}`;
  return buildVmSpec({
    name,
    template: t,
    domainType: o.domainType ?? 'qemu',
    uuid: '6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d',
    image: t.spec.disks.length > 0 ? 'debian-12' : undefined,
    volumes: t.spec.disks.map((d) => {
      const vol = diskVolumeName(name, d.name, d.format);
      return { disk: d.name, pool: 'default', name: vol, path: `/var/lib/libvirt/images/${vol}` };
    }),
    seed: { pool: 'default', name: seedVolumeName(name), path: `/var/lib/libvirt/images/${seedVolumeName(name)}` },
    hostPort: ({ nic, forward }) => 22000 + nic * 10 + forward,
    vmctlVersion: '0.0.0-test',
    createdAt: '2024-01-02T03:04:05.000Z',
    ...(o.loader ? { firmwareLoader: { path: DEBIAN_OVMF.code, nvramTemplate: DEBIAN_OVMF.vars, nvramPath: `/var/lib/libvirt/qemu/nvram/${name}_VARS.fd` } } : {}),
  });
}

function fromDoc(doc: Record<string, unknown>, name: string): ResolvedTemplate {
  const r = validateTemplate(doc, { source: name });
  if (!r.ok) throw new Error(r.problems.map((p) => `${p.path}: ${p.message}`).join('\n'));
  return { name, files: [], spec: r.value };
}

/** Everything the shipped templates do not exercise. */
const KITCHEN_SINK = {
  description: 'every device kind',
  machine: 'pc',
  cpus: 3,
  memory: '1536MiB',
  disks: [
    { name: 'root', size: '8GiB', bus: 'virtio' },
    { name: 'legacy', size: 1, bus: 'ide', format: 'raw' },
    { name: 'scratch', size: '512MiB', bus: 'scsi', format: 'qcow2', image: 'scratch-base' },
  ],
  nics: [
    { type: 'network', network: 'default', mac: '52:54:00:AA:bb:01' },
    { type: 'bridge', bridge: 'br0', model: 'e1000' },
    { type: 'user', model: 'rtl8139' },
    {
      type: 'user',
      model: 'e1000e',
      mac: '52:54:00:aa:bb:04',
      forwards: [
        { host: '127.0.0.2', hostPort: 2222, guestPort: 22 },
        { hostPort: 0, guestPort: 53, proto: 'udp' },
      ],
    },
  ],
  boot: { type: 'kernel', kernel: '/var/lib/vmctl/kernels/vmlinuz', initrd: '/var/lib/vmctl/kernels/initrd.img', cmdline: 'console=ttyS0 root=/dev/vda1 quiet' },
  graphics: 'vnc',
  serial: false,
};

interface GoldenCase {
  file: string;
  spec: () => Promise<VmSpec>;
}

const shipped = await listTemplates([SHIPPED_TEMPLATE_DIR]);
const cases: GoldenCase[] = [
  ...shipped.map((t) => ({ file: `${t.name}.xml`, spec: async () => specFor(await loadTemplate(t.name, { dirs: [SHIPPED_TEMPLATE_DIR] })) })),
  { file: 'medium-kvm.xml', spec: async () => specFor(await loadTemplate('medium', { dirs: [SHIPPED_TEMPLATE_DIR] }), { domainType: 'kvm' }) },
  { file: 'uefi-loader.xml', spec: async () => specFor(await loadTemplate('uefi', { dirs: [SHIPPED_TEMPLATE_DIR] }), { loader: true }) },
  { file: 'kitchen-sink.xml', spec: async () => specFor(fromDoc(KITCHEN_SINK, 'kitchen-sink')) },
  {
    file: 'vnc-q35-kvm.xml',
    spec: async () => specFor(fromDoc({ graphics: 'vnc', cloudInit: { user: 'dev' }, disks: [{ name: 'root', size: 2, bus: 'sata' }] }, 'vnc-q35'), { domainType: 'kvm' }),
  },
];

describe('virt-xml-validate', () => {
  it('really checks (negative control)', () => {
    const r = libvirtValidate("<domain type='bogus'><name>x</name></domain>");
    expect(r.ok).toBe(false);
    expect(r.output).toMatch(/fails to validate|Relax-NG validity error/);
  });
});

describe('golden domain XML', () => {
  it('covers every shipped template', () => {
    expect(shipped.map((t) => t.name)).toEqual(expect.arrayContaining(['default', 'small', 'medium', 'desktop-lab', 'uefi']));
  });

  it.each(cases)('$file matches the golden file and libvirt’s schema', async ({ file, spec }) => {
    const xml = buildDomainXml(await spec());
    const goldenFile = path.join(GOLDEN, file);
    if (UPDATE || !existsSync(goldenFile)) {
      if (!UPDATE) throw new Error(`missing golden file ${goldenFile}: run UPDATE_GOLDEN=1 npx vitest run test/unit/domain-xml`);
      writeFileSync(goldenFile, xml);
    }
    expect(xml).toBe(readFileSync(goldenFile, 'utf8'));
    expectValid(xml);
  });
});

describe('domain XML content', () => {
  const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@_', parseTagValue: false, trimValues: false });
  // parsed XML is walked freely in assertions
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const parse = (xml: string) => parser.parse(xml) as { domain: Record<string, any> };

  it('TCG gets qemu64, KVM host-passthrough', async () => {
    const t = await loadTemplate('small', { dirs: [SHIPPED_TEMPLATE_DIR] });
    const tcg = parse(buildDomainXml(specFor(t))).domain;
    expect(tcg['@_type']).toBe('qemu');
    expect(tcg.cpu['@_mode']).toBe('custom');
    expect(tcg.cpu.model['#text']).toBe('qemu64');
    const kvm = parse(buildDomainXml(specFor(t, { domainType: 'kvm' }))).domain;
    expect(kvm['@_type']).toBe('kvm');
    expect(kvm.cpu['@_mode']).toBe('host-passthrough');
  });

  it('UEFI: firmware autoselection with Secure Boot off', async () => {
    const t = await loadTemplate('uefi', { dirs: [SHIPPED_TEMPLATE_DIR] });
    const os = parse(buildDomainXml(specFor(t))).domain.os;
    expect(os['@_firmware']).toBe('efi');
    expect(os.firmware.feature).toEqual([
      { '@_enabled': 'no', '@_name': 'enrolled-keys' },
      { '@_enabled': 'no', '@_name': 'secure-boot' },
    ]);
    const explicit = parse(buildDomainXml(specFor(t, { loader: true }))).domain.os;
    expect(explicit['@_firmware']).toBeUndefined();
    expect(explicit.loader['#text']).toBe('/usr/share/OVMF/OVMF_CODE_4M.fd');
    expect(explicit.nvram['@_template']).toBe('/usr/share/OVMF/OVMF_VARS_4M.fd');
  });

  it('user NIC forwards go through qemu:commandline on loopback; graphics listen on 127.0.0.1', () => {
    const spec = specFor(fromDoc(KITCHEN_SINK, 'ks'));
    const xml = buildDomainXml(spec);
    const d = parse(xml).domain;
    expect(d['@_xmlns:qemu']).toBe(QEMU_XMLNS);
    expect(d['qemu:commandline']['qemu:arg'].map((a: Record<string, string>) => a['@_value'])).toEqual([
      '-netdev',
      'user,id=vmctlnet3,hostfwd=tcp:127.0.0.2:2222-:22,hostfwd=udp:127.0.0.1:22031-:53',
      '-device',
      'e1000e,netdev=vmctlnet3,bus=pci.0,addr=0x1c,mac=52:54:00:aa:bb:04',
    ]);
    expect(d.devices.interface.map((i: Record<string, string>) => i['@_type'])).toEqual(['network', 'bridge', 'user']);
    expect(d.devices.graphics.listen['@_address']).toBe('127.0.0.1');
    expect(d.devices.serial).toBeUndefined();
    expect(d.devices.controller['@_model']).toBe('virtio-scsi');
  });

  it("a login through the user-mode forward gives the guest's address (QEMU's default one)", () => {
    const def = readFileSync(path.join(GOLDEN, 'default.xml'), 'utf8');
    expect(userForwardGuestAddress(def, 22000)).toBe('10.0.2.15');
    expect(userForwardGuestAddress(def, 22001)).toBeUndefined();
    // a forward to an explicit guest address, and QEMU options that move the default address
    expect(userForwardGuestAddress(def.replace('-:22"', '-10.0.2.20:22"'), 22000)).toBe('10.0.2.20');
    expect(userForwardGuestAddress(def.replace('user,id=vmctlnet0,', 'user,id=vmctlnet0,net=192.168.9.0/24,'), 22000)).toBeUndefined();
    // other NICs beside it (the user-mode one is still where the forward goes)
    expect(userForwardGuestAddress(buildDomainXml(specFor(fromDoc(KITCHEN_SINK, 'ks'))), 2222)).toBe('10.0.2.15');
    expect(userForwardGuestAddress('<domain', 22000)).toBeUndefined();
  });

  it('commandline NICs get fixed slots libvirt leaves free', () => {
    expect(commandlineNicAddress('q35', 0)).toEqual({ bus: 'pcie.0', addr: '0x10' });
    expect(commandlineNicAddress('q35', 7)).toEqual({ bus: 'pcie.0', addr: '0x17' });
    expect(commandlineNicAddress('pc', 0)).toEqual({ bus: 'pci.0', addr: '0x1f' });
    expect(commandlineNicAddress('pc', 7)).toEqual({ bus: 'pci.0', addr: '0x18' });
    expect(() => commandlineNicAddress('pc', 8)).toThrow(VmctlError);
  });

  it('refuses non-loopback forwards even in a hand-made spec', () => {
    const spec = specFor(fromDoc(KITCHEN_SINK, 'ks'));
    const nic = spec.nics[3]!;
    if (nic.type !== 'user') throw new Error('fixture');
    nic.forwards[0]!.host = '0.0.0.0';
    expect(() => buildDomainXml(spec)).toThrow(VmctlError);
    nic.forwards[0]!.host = '127.0.0.1,hostfwd=tcp:0.0.0.0:1-:2';
    expect(() => buildDomainXml(spec)).toThrow(/loopback/);
  });

  it('refuses values XML cannot carry', async () => {
    const spec = specFor(await loadTemplate('small', { dirs: [SHIPPED_TEMPLATE_DIR] }));
    spec.description = 'bell\u0007';
    const err = (() => {
      try {
        buildDomainXml(spec);
      } catch (e) {
        return e as VmctlError;
      }
    })();
    expect(err?.code).toBe('INVALID_INPUT');
    expect(err?.message).toBe('domain/description: "bell\\u0007" contains characters XML cannot carry');
  });
});

describe('escaping', () => {
  const ODD = `it's "quoted" <b>&amp; & ]]> <!-- x --> <?pi?>`;
  const oddSpec = (): VmSpec => {
    const spec = specFor(fromDoc({ ...KITCHEN_SINK, description: ODD }, 'odd'));
    spec.disks[0]!.volume = { pool: `p'o"o<l>&`, name: `v'o"l<&>.qcow2`, path: `/var/lib/libvirt/images/we'ird "name" <&>.qcow2` };
    spec.metadata.template = `t<&>'"`;
    spec.metadata.image = `i&"'<>`;
    spec.metadata.createdBy = ODD;
    if (spec.boot.type === 'kernel') {
      spec.boot.kernel = `/boot/vmlinuz-<&>'"`;
      spec.boot.cmdline = `console=ttyS0 msg="<&>" x='y' ]]>`;
    }
    const nic0 = spec.nics[0]!;
    if (nic0.type === 'network') nic0.network = `net'"<&>`;
    return spec;
  };

  it('every odd string round-trips through the XML', () => {
    const spec = oddSpec();
    const xml = buildDomainXml(spec);
    for (const raw of ['<b>', '<&>', '<!--', '<?pi', "'y'", '"<&>"', ']]>']) expect(xml).not.toContain(raw);
    const parsed = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@_', parseTagValue: false, trimValues: false }).parse(xml);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const d = parsed.domain as Record<string, any>;
    expect(d.description).toBe(ODD);
    expect(d.devices.disk[0].source['@_file']).toBe(`/var/lib/libvirt/images/we'ird "name" <&>.qcow2`);
    expect(d.os.kernel).toBe(`/boot/vmlinuz-<&>'"`);
    expect(d.os.cmdline).toBe(`console=ttyS0 msg="<&>" x='y' ]]>`);
    expect(d.devices.interface[0].source['@_network']).toBe(`net'"<&>`);
    const meta = parseVmctlMetadata(xml)!;
    expect(meta.template).toBe(`t<&>'"`);
    expect(meta.image).toBe(`i&"'<>`);
    expect(meta.createdBy).toBe(ODD);
    expect(meta.volumes[0]).toEqual({
      role: 'disk',
      disk: 'root',
      pool: `p'o"o<l>&`,
      name: `v'o"l<&>.qcow2`,
      path: `/var/lib/libvirt/images/we'ird "name" <&>.qcow2`,
    });
  });

  it('and the escaped document is still valid for libvirt', () => {
    expectValid(buildDomainXml(oddSpec()));
  });
});

describe('vmctl metadata', () => {
  it('round-trips, whatever prefix libvirt hands back', async () => {
    const spec = specFor(await loadTemplate('default', { dirs: [SHIPPED_TEMPLATE_DIR] }), { name: 'web' });
    const xml = buildDomainXml(spec);
    const expected = {
      template: 'default',
      image: 'debian-12',
      createdBy: 'vmctl 0.0.0-test',
      createdAt: '2024-01-02T03:04:05.000Z',
      sshUser: 'vmctl',
      volumes: [
        { role: 'disk', disk: 'root', pool: 'default', name: 'web-root.qcow2', path: '/var/lib/libvirt/images/web-root.qcow2' },
        { role: 'seed', pool: 'default', name: 'web-seed.iso', path: '/var/lib/libvirt/images/web-seed.iso' },
      ],
      forwards: [{ nic: 0, proto: 'tcp', host: '127.0.0.1', hostPort: 22000, guestPort: 22 }],
    };
    expect(parseVmctlMetadata(xml)).toEqual(expected);
    // libvirt re-serialises with single quotes; another prefix must not matter
    const renamed = xml.replace(/vmctl:/g, 'v:').replace('xmlns:vmctl=', 'xmlns:v=').replace(/"/g, "'");
    expect(renamed).toContain(`xmlns:v='${VMCTL_XMLNS}'`);
    expect(parseVmctlMetadata(renamed)).toEqual(expected);
  });

  it('volumes the caller did not create are not recorded', async () => {
    const t = await loadTemplate('small', { dirs: [SHIPPED_TEMPLATE_DIR] });
    const spec = specFor(t);
    spec.disks[0]!.createdByVmctl = false;
    expect(parseVmctlMetadata(buildDomainXml(spec))!.volumes.map((v) => v.role)).toEqual(['seed']);
  });

  it('null for domains vmctl did not create', () => {
    expect(parseVmctlMetadata("<domain type='qemu'><name>x</name></domain>")).toBeNull();
    expect(
      parseVmctlMetadata("<domain type='qemu'><name>x</name><metadata><o:vm xmlns:o='https://other.example/ns'><o:template>t</o:template></o:vm></metadata></domain>"),
    ).toBeNull();
  });
});
