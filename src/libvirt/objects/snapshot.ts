/** A domain snapshot. */
import type { NonnullDomainSnapshot } from '../generated/remote.gen.js';
import type { Domain } from './domain.js';
import { LibvirtError } from '../errors.js';
import { VirErrorNumber } from '../generated/constants.gen.js';

export class Snapshot {
  readonly name: string;
  constructor(
    readonly domain: Domain,
    readonly ref: NonnullDomainSnapshot,
  ) {
    this.name = ref.name;
  }

  async xml(flags = 0): Promise<string> {
    return (await this.domain.conn.remote.domainSnapshotGetXmlDesc({ snap: this.ref, flags })).xml;
  }

  async revert(flags = 0): Promise<void> {
    await this.domain.conn.remote.domainRevertToSnapshot({ snap: this.ref, flags });
  }

  async delete(flags = 0): Promise<void> {
    await this.domain.conn.remote.domainSnapshotDelete({ snap: this.ref, flags });
  }

  /** The parent snapshot, or null for a root. */
  async parent(): Promise<Snapshot | null> {
    try {
      return new Snapshot(this.domain, (await this.domain.conn.remote.domainSnapshotGetParent({ snap: this.ref, flags: 0 })).snap);
    } catch (e) {
      if (e instanceof LibvirtError && e.code === VirErrorNumber.VIR_ERR_NO_DOMAIN_SNAPSHOT) return null;
      throw e;
    }
  }

  async isCurrent(): Promise<boolean> {
    return (await this.domain.conn.remote.domainSnapshotIsCurrent({ snap: this.ref, flags: 0 })).current === 1;
  }
}
