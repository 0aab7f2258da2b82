/**
 * The disks of a domain as snapshots need them (target, device, format,
 * read-only, source file), a disk's backing chain as the storage API reports
 * it, and rewriting disk sources in a domain definition — through the XML
 * library in order-preserving mode, so the rest of the definition comes back
 * exactly as libvirt gave it.
 */
import { XMLBuilder, XMLParser } from 'fast-xml-parser';
import { xmlParserWith } from '../xml.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Connection } from '../../libvirt/connection.js';

export interface DomainDisk {
  target: string;
  device: 'disk' | 'cdrom' | 'floppy' | 'lun';
  format?: string;
  readonly: boolean;
  source?: string;
}

type XmlNode = Record<string, unknown>;
const parser = xmlParserWith((name) => name === 'disk');
const asArray = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

export function domainDisks(domainXml: string): DomainDisk[] {
  const doc = parser.parse(domainXml) as { domain?: { devices?: { disk?: XmlNode | XmlNode[] } } };
  return asArray(doc.domain?.devices?.disk).map((d) => {
    const source = (d.source as XmlNode | undefined)?.['@_file'];
    const format = (d.driver as XmlNode | undefined)?.['@_type'];
    return {
      target: String((d.target as XmlNode | undefined)?.['@_dev'] ?? '?'),
      device: (d['@_device'] ?? 'disk') as DomainDisk['device'],
      ...(typeof format === 'string' ? { format } : {}),
      readonly: 'readonly' in d || d['@_device'] === 'cdrom',
      ...(typeof source === 'string' ? { source } : {}),
    };
  });
}

/** Disks that take part in snapshots: writable file disks. */
export function snapshotableDisks(domainXml: string): DomainDisk[] {
  return domainDisks(domainXml).filter((d) => d.device === 'disk' && !d.readonly && d.source !== undefined);
}

/** top, its backing file, its backing file's… as the storage API sees them (files outside pools end the walk). */
export async function backingChain(conn: Connection, top: string): Promise<string[]> {
  const chain = [top];
  for (let path = top; chain.length < 64; ) {
    let xml: string;
    try {
      xml = await (await conn.lookupStorageVolumeByPath(path)).xml();
    } catch (e) {
      if (e instanceof LibvirtError && e.isNotFound()) break;
      throw e;
    }
    const next = (xmlParserWith(() => false).parse(xml) as { volume?: { backingStore?: { path?: unknown } } }).volume?.backingStore?.path;
    if (typeof next !== 'string' || next === '') break;
    chain.push(next);
    path = next;
  }
  return chain;
}

const ORDERED = { ignoreAttributes: false, attributeNamePrefix: '@_', preserveOrder: true, parseTagValue: false, parseAttributeValue: false, trimValues: false } as const;

/** The domain definition with the given disks (by target) on new source files; nothing else changes. */
export function withDiskSources(domainXml: string, sources: ReadonlyMap<string, string>): string {
  const doc = new XMLParser(ORDERED).parse(domainXml) as XmlNode[];
  let replaced = 0;
  const visit = (nodes: XmlNode[]) => {
    for (const n of nodes) {
      if (Array.isArray(n.disk)) {
        const children = n.disk as XmlNode[];
        const target = children.find((c) => 'target' in c)?.[':@'] as XmlNode | undefined;
        const dev = target?.['@_dev'];
        const file = typeof dev === 'string' ? sources.get(dev) : undefined;
        if (file !== undefined) {
          for (const c of children) {
            if ('source' in c && c[':@'] && typeof (c[':@'] as XmlNode)['@_file'] === 'string') {
              (c[':@'] as XmlNode)['@_file'] = file;
              replaced++;
            }
          }
          // the old backing chain no longer applies
          const i = children.findIndex((c) => 'backingStore' in c);
          if (i >= 0) children.splice(i, 1);
        }
        continue;
      }
      for (const v of Object.values(n)) if (Array.isArray(v)) visit(v as XmlNode[]);
    }
  };
  visit(doc);
  if (replaced !== sources.size) throw new Error(`withDiskSources: ${sources.size} disks to rewrite, ${replaced} found`);
  return new XMLBuilder({ ...ORDERED, suppressEmptyNode: true }).build(doc) as string;
}
