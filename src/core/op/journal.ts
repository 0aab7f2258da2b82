/**
 * Intent records: before a multi-step command changes a VM, it writes what it
 * is doing into the domain's own metadata (a `vmctlop:op` element in its own
 * namespace), on the host, where every client of that host sees it; it moves
 * the record along as each step is done and clears it when the VM is
 * complete. A domain carrying the record is *incomplete*: `list` shows which
 * command and step, `delete` removes exactly what that command made (the
 * volumes named in vmctl's metadata), `create` of the name says how to clear it,
 * `host check` lists it. vmctl recognises its objects by these records and its
 * `vmctl:vm` metadata, never by name alone.
 */
import { metadataElement, xmlBuilder, xmlParserWith } from '../xml.js';
import type { Domain } from '../../libvirt/connection.js';
import { VirDomainModificationImpact } from '../../libvirt/generated/constants.gen.js';
import { currentHolder, holderLiveness, type Holder } from './holder.js';

export const OP_XMLNS = 'https://vmctl.dev/xmlns/op/1';
const PREFIX = 'vmctlop';

export interface OpMarker extends Holder {
  /** the command: create, … */
  op: string;
  opId: string;
  /** the last step begun (create: define, keys, disks, seed, start) */
  step: string;
  since: string;
  updated: string;
}

type XmlNode = Record<string, unknown>;

function attrs(m: OpMarker): XmlNode {
  const out: XmlNode = {};
  for (const [k, v] of Object.entries(m)) if (v !== undefined) out[`@_${k}`] = String(v);
  return out;
}

/** The marker as a child of the domain's <metadata> (for the defining XML). */
export function markerMetadata(m: OpMarker): XmlNode {
  return { [`${PREFIX}:op`]: { '@_xmlns:vmctlop': OP_XMLNS, ...attrs(m) } };
}

export function newMarker(op: string, opId: string, step: string): OpMarker {
  const now = new Date().toISOString();
  return { op, opId, step, since: now, updated: now, ...currentHolder() };
}

const parser = xmlParserWith(() => false);

/** The marker in a domain XML, or null (a complete VM, or none of vmctl's). */
export function parseOpMarker(domainXml: string): OpMarker | null {
  const doc = parser.parse(domainXml) as { domain?: { metadata?: Record<string, unknown> } };
  const el = metadataElement(doc.domain?.metadata, OP_XMLNS, 'op');
  if (el) {
    const node = el.node;
    const a = (n: string) => (typeof node[`@_${n}`] === 'string' ? (node[`@_${n}`] as string) : undefined);
    const pid = Number(a('pid'));
    const bootId = a('bootId');
    const startTicks = a('startTicks');
    return {
      op: a('op') ?? 'unknown',
      opId: a('opId') ?? '',
      step: a('step') ?? 'unknown',
      since: a('since') ?? '',
      updated: a('updated') ?? '',
      user: a('user') ?? '?',
      host: a('host') ?? '?',
      pid: Number.isFinite(pid) ? pid : 0,
      ...(bootId ? { bootId } : {}),
      ...(startTicks ? { startTicks } : {}),
    };
  }
  return null;
}

/** Whether the command that left the marker may still be running ('alive'), is gone ('dead'), or cannot be told. */
export function markerLiveness(m: OpMarker): 'alive' | 'dead' | 'unknown' {
  return holderLiveness(m);
}

function impact(running: boolean): number {
  const F = VirDomainModificationImpact;
  return running ? F.VIR_DOMAIN_AFFECT_LIVE | F.VIR_DOMAIN_AFFECT_CONFIG : F.VIR_DOMAIN_AFFECT_CONFIG;
}

/** Move the record on to the next step (durably, before that step changes anything). */
export async function recordStep(dom: Domain, m: OpMarker, step: string, running = false): Promise<OpMarker> {
  const next = { ...m, step, updated: new Date().toISOString() };
  const xml = (xmlBuilder.build({ op: attrs(next) }) as string).trim();
  await dom.setMetadataElement(OP_XMLNS, PREFIX, xml, impact(running));
  return next;
}

/** The VM is complete: remove the record. */
export async function clearMarker(dom: Domain, running = false): Promise<void> {
  await dom.setMetadataElement(OP_XMLNS, PREFIX, null, impact(running));
}
