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

/** xmlParser's configuration, with `isArray` deciding which elements are always arrays. */
export function xmlParserWith(isArray: NonNullable<X2jOptions['isArray']>): XMLParser {
  return new XMLParser({ ...PARSER_OPTIONS, isArray });
}
