/**
 * The XML configuration vmctl uses for libvirt documents: attributes as
 * '@_name', values never coerced to numbers, escaping done by the library.
 * `xmlBuilder`/`xmlParser` serve the small documents (volumes, pools, probe
 * domains); `xmlParserWith` is the same parser for documents whose repeated
 * elements must always come back as arrays (capabilities, vmctl metadata).
 * Domain XML has its own builder (src/core/domain-xml.ts).
 */
import { XMLBuilder, XMLParser, type X2jOptions } from 'fast-xml-parser';

const PARSER_OPTIONS = { ignoreAttributes: false, attributeNamePrefix: '@_', parseTagValue: false, parseAttributeValue: false } as const;

export const xmlBuilder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', format: true, suppressEmptyNode: true });
export const xmlParser = new XMLParser(PARSER_OPTIONS);

type XmlNode = Record<string, unknown>;

/**
 * vmctl's element in a parsed domain `<metadata>`: the child in namespace `ns` (whatever prefix
 * libvirt gave it), optionally only one whose local name is `local`. `p` is its prefix with the
 * colon ('vmctl:' or ''), for reading and writing its children.
 */
export function metadataElement(metadata: unknown, ns: string, local?: string): { key: string; node: XmlNode; p: string } | undefined {
  if (!metadata || typeof metadata !== 'object') return undefined;
  for (const [key, v] of Object.entries(metadata as XmlNode)) {
    if (key.startsWith('@_') || !v || typeof v !== 'object' || Array.isArray(v)) continue;
    const node = v as XmlNode;
    const i = key.indexOf(':');
    const prefix = i < 0 ? '' : key.slice(0, i);
    if (node[prefix ? `@_xmlns:${prefix}` : '@_xmlns'] !== ns) continue;
    if (local !== undefined && key.slice(i + 1) !== local) continue;
    return { key, node, p: prefix ? `${prefix}:` : '' };
  }
  return undefined;
}

/**
 * xmlParser's configuration, with `isArray` deciding which elements are always arrays; `stopNodes`
 * (paths like 'domainsnapshot.domain') are left unparsed, their content kept as text.
 */
export function xmlParserWith(isArray: NonNullable<X2jOptions['isArray']>, stopNodes?: string[]): XMLParser {
  return new XMLParser({ ...PARSER_OPTIONS, isArray, ...(stopNodes ? { stopNodes } : {}) });
}
