/**
 * The XML builder and parser for the small libvirt documents vmctl writes and
 * reads (volumes, pools, probe domains): attributes as '@_name', values never
 * coerced to numbers, escaping done by the library. Domain XML and host
 * capabilities have their own, stricter configurations.
 */
import { XMLBuilder, XMLParser } from 'fast-xml-parser';

export const xmlBuilder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', format: true, suppressEmptyNode: true });
export const xmlParser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@_', parseTagValue: false, parseAttributeValue: false });
