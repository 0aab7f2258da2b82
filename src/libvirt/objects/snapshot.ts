/** A domain snapshot. */
import type { NonnullDomainSnapshot } from '../generated/remote.gen.js';
import type { Domain } from './domain.js';

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
}
