/** A libvirt virtual network. */
import type { NonnullNetwork } from '../generated/remote.gen.js';
import type { Connection } from '../connection.js';
import { uuidToString } from './uuid.js';

export class Network {
  readonly name: string;
  constructor(
    readonly conn: Connection,
    readonly ref: NonnullNetwork,
  ) {
    this.name = ref.name;
  }

  async isActive(): Promise<boolean> {
    return (await this.conn.remote.networkIsActive({ net: this.ref })).active === 1;
  }

  async xml(flags = 0): Promise<string> {
    return (await this.conn.remote.networkGetXmlDesc({ net: this.ref, flags })).xml;
  }

  get uuidString(): string {
    return uuidToString(this.ref.uuid);
  }

  async start(): Promise<void> {
    await this.conn.remote.networkCreate({ net: this.ref });
  }

  async destroy(): Promise<void> {
    await this.conn.remote.networkDestroy({ net: this.ref });
  }

  async undefine(): Promise<void> {
    await this.conn.remote.networkUndefine({ net: this.ref });
  }

  async setAutostart(on: boolean): Promise<void> {
    await this.conn.remote.networkSetAutostart({ net: this.ref, autostart: on ? 1 : 0 });
  }
}
