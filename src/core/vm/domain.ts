/**
 * Finding vmctl's VMs and taking them apart: lookups that say what to do when
 * the name is unknown, the undefine flags vmctl uses, and what an incomplete
 * VM (left by an interrupted command) looks like to the user.
 */
import { VmctlError } from '../errors.js';
import { assertVmName } from '../names.js';
import { LibvirtError } from '../../libvirt/errors.js';
import type { Connection, Domain } from '../../libvirt/connection.js';
import { VirDomainUndefineFlagsValues } from '../../libvirt/generated/constants.gen.js';
import { describeHolder } from '../op/holder.js';
import { markerLiveness, type OpMarker } from '../op/journal.js';
import { parseImageVolumeName } from '../storage/volume.js';
import { parseJournal } from '../migrate/snapshots.js';
import { isBuildableImage } from '../image/types.js';

/** The domain, or undefined when there is none of that name. */
export async function lookupVm(conn: Connection, name: string): Promise<Domain | undefined> {
  try {
    return await conn.lookupDomain(name);
  } catch (e) {
    if (e instanceof LibvirtError && e.isNotFound()) return undefined;
    throw e;
  }
}

export async function findVm(conn: Connection, name: string): Promise<Domain> {
  assertVmName(name);
  const dom = await lookupVm(conn, name);
  if (!dom) throw new VmctlError('NOT_FOUND', `no VM named '${name}' on ${conn.uri.original}`, { hint: 'see vmctl list --all' });
  return dom;
}

export async function undefineDomain(dom: Domain): Promise<void> {
  const F = VirDomainUndefineFlagsValues;
  await dom.undefine(
    F.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | F.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | F.VIR_DOMAIN_UNDEFINE_NVRAM | F.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA,
  );
}

/** "vmctl create (root@host pid 123, step volumes, since …), which is gone" */
export function describeMarker(m: OpMarker): string {
  const life = markerLiveness(m);
  const state = life === 'dead' ? ', which is gone' : life === 'alive' ? ', still running' : '';
  return `vmctl ${m.op} by ${describeHolder(m)} stopped at step '${m.step}' (since ${m.since})${state}`;
}

/**
 * The refusal for a VM another command left incomplete, with the way out: an interrupted
 * migration is set right by `migrate --recover` (the guest itself is fine: never delete it);
 * what other commands left, `vmctl delete` removes.
 */
export function incompleteError(name: string, m: OpMarker, domainXml: string): VmctlError {
  const to = m.op === 'migrate' ? parseJournal(domainXml)?.to : undefined;
  return new VmctlError('CONFLICT', `VM ${name} is incomplete: ${describeMarker(m)}`, {
    hint: m.op === 'migrate' ? `vmctl migrate ${name} --to ${to ?? 'URI'} --recover sets right what the interrupted migration left` : `vmctl delete ${name} removes what that command made`,
  });
}

/** QEMU/libvirt's "Cannot access backing file '…/img_debian-12.qcow2'" as what the user can do about it. */
export function missingBackingError(vm: string, err: unknown): VmctlError | undefined {
  if (!(err instanceof LibvirtError)) return undefined;
  const m = /Cannot access (?:backing|storage) file '([^']+)'/i.exec(err.message);
  if (!m) return undefined;
  const path = m[1]!;
  const image = parseImageVolumeName(path.slice(path.lastIndexOf('/') + 1));
  if (image && image.kind === 'disk') {
    return new VmctlError('NOT_FOUND', `VM ${vm} cannot start: its base image '${image.name}' is missing (${path})`, {
      hint: `bring it back with ${isBuildableImage(image.name) ? `vmctl image build ${image.name}` : `vmctl image import FILE --name ${image.name}`} (the same image it was created from), then vmctl start ${vm}`,
      cause: err,
    });
  }
  return new VmctlError('NOT_FOUND', `VM ${vm} cannot start: its disk file ${path} is missing`, {
    hint: `restore that file (or vmctl delete ${vm} and create it again)`,
    cause: err,
  });
}
