/**
 * The backed-up domain definition made fit for another host: new name (and,
 * for a copy or when the original still exists there, a fresh UUID and MACs),
 * disks pointing at the restored flat volumes (no backing chain), the seed and
 * boot files at their restored volumes, libvirt networks renamed on request,
 * the SSH forward on a port picked on the target, vmctl's metadata rewritten
 * to name the new volumes, and any intent records of the source dropped.
 */
import { XMLBuilder, XMLParser } from 'fast-xml-parser';
import { VMCTL_XMLNS, withSshForwardPort } from '../vm/domain-xml.js';

type XmlNode = Record<string, unknown>;

const ARRAYS = new Set(['disk', 'interface', 'qemu:arg', 'vmctl:volume', 'vmctl:forward']);
const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@_', parseTagValue: false, parseAttributeValue: false, isArray: (n) => ARRAYS.has(n) });
const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', format: true, suppressEmptyNode: true });

export interface RestoredVolume {
  role: 'disk' | 'seed' | 'kernel' | 'initrd';
  /** disks: the target (vda) */
  target?: string;
  /** vmctl's disk name (root) */
  disk?: string;
  pool: string;
  name: string;
  path: string;
}

export interface RewriteOptions {
  name: string;
  freshIdentity: boolean;
  volumes: RestoredVolume[];
  network?: string;
  /** the SSH forward: old host port → new */
  sshPort?: { from: number; to: number };
  /** further <metadata> children (the restore's intent marker) */
  extraMetadata?: XmlNode;
}

function asArray<T>(v: T | T[] | undefined): T[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

export function rewriteDomainXml(xml: string, o: RewriteOptions): string {
  const doc = parser.parse(xml) as { domain: XmlNode };
  const d = doc.domain;
  d.name = o.name;
  if (o.freshIdentity) delete d.uuid;
  const devices = (d.devices ?? {}) as XmlNode;
  const byTarget = new Map(o.volumes.filter((v) => v.role === 'disk').map((v) => [v.target!, v]));
  const seed = o.volumes.find((v) => v.role === 'seed');
  for (const disk of asArray(devices.disk as XmlNode[] | undefined)) {
    const target = String(((disk.target ?? {}) as XmlNode)['@_dev'] ?? '');
    const vol = byTarget.get(target);
    const src = (disk.source ?? {}) as XmlNode;
    if (vol) {
      disk['@_type'] = 'file';
      disk.source = { '@_file': vol.path };
      disk.driver = { ...((disk.driver ?? {}) as XmlNode), '@_name': 'qemu', '@_type': 'qcow2' };
      delete disk.backingStore;
    } else if (disk['@_device'] === 'cdrom' && seed && src['@_file']) {
      disk.source = { '@_file': seed.path };
    }
  }
  const os = (d.os ?? {}) as XmlNode;
  const kernel = o.volumes.find((v) => v.role === 'kernel');
  const initrd = o.volumes.find((v) => v.role === 'initrd');
  if (kernel && os.kernel !== undefined) os.kernel = kernel.path;
  if (initrd && os.initrd !== undefined) os.initrd = initrd.path;
  for (const nic of asArray(devices.interface as XmlNode[] | undefined)) {
    if (o.freshIdentity) delete nic.mac;
    if (o.network && nic['@_type'] === 'network') nic.source = { ...((nic.source ?? {}) as XmlNode), '@_network': o.network };
  }
  const cmd = d['qemu:commandline'] as XmlNode | undefined;
  if (cmd) {
    for (const arg of asArray(cmd['qemu:arg'] as XmlNode[] | undefined)) {
      let v = String(arg['@_value'] ?? '');
      if (o.sshPort) v = withSshForwardPort(v, o.sshPort.from, o.sshPort.to);
      if (o.freshIdentity) v = v.replace(/,mac=[0-9a-f:]+/i, '');
      arg['@_value'] = v;
    }
  }
  // <metadata>: vmctl's record of the VM names the new volumes and port; the source's intent records go
  const md = (d.metadata && typeof d.metadata === 'object' ? d.metadata : {}) as XmlNode;
  const volumeNodes = (p: string) => ({
    [`${p}volume`]: o.volumes.map((x) => ({
      '@_role': x.role === 'seed' ? 'seed' : 'disk',
      ...(x.disk ? { '@_disk': x.disk } : x.role !== 'disk' && x.role !== 'seed' ? { '@_disk': x.role } : {}),
      '@_pool': x.pool,
      '@_name': x.name,
      '@_path': x.path,
    })),
  });
  let hadVmctl = false;
  for (const [k, v] of Object.entries(md)) {
    if (!v || typeof v !== 'object') continue;
    const node = v as XmlNode;
    const prefix = k.includes(':') ? k.slice(0, k.indexOf(':')) : '';
    const ns = node[prefix ? `@_xmlns:${prefix}` : '@_xmlns'];
    if (ns === VMCTL_XMLNS) {
      hadVmctl = true;
      const p = prefix ? `${prefix}:` : '';
      node[`${p}volumes`] = volumeNodes(p);
      const fw = node[`${p}forwards`] as XmlNode | undefined;
      if (fw && o.sshPort) {
        for (const f of asArray(fw[`${p}forward`] as XmlNode[] | undefined)) {
          if (String(f['@_host-port']) === String(o.sshPort.from) && String(f['@_guest-port']) === '22') f['@_host-port'] = String(o.sshPort.to);
        }
      }
    } else if (typeof ns === 'string' && (ns.startsWith('https://vmctl.dev/xmlns/op/') || ns.startsWith('https://vmctl.dev/xmlns/backup/'))) {
      delete md[k];
    }
  }
  // a VM vmctl did not create gets vmctl's record too: vmctl delete then removes exactly the restored volumes
  const record = hadVmctl ? {} : { 'vmctl:vm': { '@_xmlns:vmctl': VMCTL_XMLNS, 'vmctl:template': '', 'vmctl:created-by': 'vmctl restore', 'vmctl:volumes': volumeNodes('vmctl:') } };
  d.metadata = { ...md, ...record, ...(o.extraMetadata ?? {}) };
  return (builder.build(doc) as string).trimEnd() + '\n';
}

