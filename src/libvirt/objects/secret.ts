/** A libvirt secret (e.g. a volume passphrase). */
import type { NonnullSecret } from '../generated/remote.gen.js';
import type { Connection } from '../connection.js';
import { uuidToString } from './uuid.js';

export class Secret {
  readonly uuid: Buffer;
  readonly usageType: number;
  readonly usageId: string;
  constructor(
    readonly conn: Connection,
    readonly ref: NonnullSecret,
  ) {
    this.uuid = ref.uuid;
    this.usageType = ref.usageType;
    this.usageId = ref.usageID;
  }

  get uuidString(): string {
    return uuidToString(this.uuid);
  }

  async xml(): Promise<string> {
    return (await this.conn.remote.secretGetXmlDesc({ secret: this.ref, flags: 0 })).xml;
  }

  async undefine(): Promise<void> {
    await this.conn.remote.secretUndefine({ secret: this.ref });
  }
}
