/** Storage pools and their volumes (with upload/download streams). */
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { RpcStream } from '../rpc/caller.js';
import type { NonnullStoragePool, NonnullStorageVol, StoragePoolGetInfoRet, StorageVolGetInfoRet } from '../generated/remote.gen.js';
import type { Connection } from '../connection.js';
import { uuidToString } from './uuid.js';
import { VirStorageVolDownloadFlags } from '../generated/constants.gen.js';

export class StoragePool {
  readonly name: string;
  constructor(
    readonly conn: Connection,
    readonly ref: NonnullStoragePool,
  ) {
    this.name = ref.name;
  }

  get uuidString(): string {
    return uuidToString(this.ref.uuid);
  }

  info(): Promise<StoragePoolGetInfoRet> {
    return this.conn.remote.storagePoolGetInfo({ pool: this.ref });
  }

  async xml(flags = 0): Promise<string> {
    return (await this.conn.remote.storagePoolGetXmlDesc({ pool: this.ref, flags })).xml;
  }

  async isActive(): Promise<boolean> {
    return (await this.conn.remote.storagePoolIsActive({ pool: this.ref })).active === 1;
  }

  async build(flags = 0): Promise<void> {
    await this.conn.remote.storagePoolBuild({ pool: this.ref, flags });
  }

  async start(flags = 0): Promise<void> {
    await this.conn.remote.storagePoolCreate({ pool: this.ref, flags });
  }

  async setAutostart(on: boolean): Promise<void> {
    await this.conn.remote.storagePoolSetAutostart({ pool: this.ref, autostart: on ? 1 : 0 });
  }

  async autostart(): Promise<boolean> {
    return (await this.conn.remote.storagePoolGetAutostart({ pool: this.ref })).autostart === 1;
  }

  async refresh(): Promise<void> {
    await this.conn.remote.storagePoolRefresh({ pool: this.ref, flags: 0 });
  }

  async destroy(): Promise<void> {
    await this.conn.remote.storagePoolDestroy({ pool: this.ref });
  }

  async undefine(): Promise<void> {
    await this.conn.remote.storagePoolUndefine({ pool: this.ref });
  }

  async listVolumes(): Promise<StorageVolume[]> {
    const r = await this.conn.remote.storagePoolListAllVolumes({ pool: this.ref, needResults: 1, flags: 0 });
    return r.vols.map((v) => new StorageVolume(this.conn, v));
  }

  async lookupVolume(name: string): Promise<StorageVolume> {
    return new StorageVolume(this.conn, (await this.conn.remote.storageVolLookupByName({ pool: this.ref, name })).vol);
  }

  async createVolume(xml: string, flags = 0): Promise<StorageVolume> {
    return new StorageVolume(this.conn, (await this.conn.remote.storageVolCreateXml({ pool: this.ref, xml, flags })).vol);
  }
}

export class StorageVolume {
  readonly name: string;
  constructor(
    readonly conn: Connection,
    readonly ref: NonnullStorageVol,
  ) {
    this.name = ref.name;
  }

  get key(): string {
    return this.ref.key;
  }

  get poolName(): string {
    return this.ref.pool;
  }

  info(): Promise<StorageVolGetInfoRet> {
    return this.conn.remote.storageVolGetInfo({ vol: this.ref });
  }

  async path(): Promise<string> {
    return (await this.conn.remote.storageVolGetPath({ vol: this.ref })).name;
  }

  async xml(flags = 0): Promise<string> {
    return (await this.conn.remote.storageVolGetXmlDesc({ vol: this.ref, flags })).xml;
  }

  async delete(flags = 0): Promise<void> {
    await this.conn.remote.storageVolDelete({ vol: this.ref, flags });
  }

  /** Upload `source` into the volume at `offset` (length 0 = to the end). */
  async upload(source: Readable, opts: { offset?: bigint; length?: bigint; flags?: number } = {}): Promise<void> {
    const { stream } = await this.conn.remote.storageVolUpload({
      vol: this.ref,
      offset: opts.offset ?? 0n,
      length: opts.length ?? 0n,
      flags: opts.flags ?? 0,
    });
    await pipeline(source, stream);
    await stream.done;
  }

  /**
   * The volume's bytes as a sparse stream (VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM): holes travel
   * as hole packets, not zeros; the stream emits 'hole' and yields them as zero bytes.
   */
  downloadSparse(opts: { offset?: bigint; length?: bigint } = {}): Promise<RpcStream> {
    return this.download({ ...opts, flags: VirStorageVolDownloadFlags.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM });
  }

  /** A readable stream of the volume's bytes (length 0 = to the end). */
  async download(opts: { offset?: bigint; length?: bigint; flags?: number } = {}): Promise<RpcStream> {
    const { stream } = await this.conn.remote.storageVolDownload({
      vol: this.ref,
      offset: opts.offset ?? 0n,
      length: opts.length ?? 0n,
      flags: opts.flags ?? 0,
    });
    return stream;
  }
}
