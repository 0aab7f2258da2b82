/**
 * Typed high-level layer over the generated procedures: Connection, Domain,
 * Snapshot, StoragePool, StorageVolume, Network, events. What vmctl's core
 * uses; everything else stays reachable through `conn.remote` (the full
 * generated API).
 */
import { EventEmitter } from 'node:events';
import type { Duplex, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { silentLogger } from '../core/log.js';
import { parseLibvirtUri } from './uri.js';
import { connectTransport } from './transport/index.js';
import type { ConnectedTransport, LibvirtUri } from './transport/types.js';
import { TransportError } from './transport/errors.js';
import { RpcClient } from './rpc/client.js';
import { authenticate, openConnection, startKeepaliveIfSupported } from './rpc/auth.js';
import type { RpcStream } from './rpc/caller.js';
import {
  RemoteProcedures,
  Procedure,
  REMOTE_PROGRAM,
  decodeDomainEventCallbackLifecycleMsg,
  type NonnullDomain,
  type NonnullStoragePool,
  type NonnullStorageVol,
  type NonnullNetwork,
  type NonnullDomainSnapshot,
  type NonnullSecret,
  type DomainInterface,
  type DomainGetInfoRet,
  type StorageVolGetInfoRet,
  type StoragePoolGetInfoRet,
} from './generated/remote.gen.js';
import {
  VirConnectListAllDomainsFlags,
  VirDomainEventID,
  VirDomainEventType,
  VirDomainState,
} from './generated/constants.gen.js';
import { XdrReader } from './xdr/index.js';

/** The libvirt source the protocol code was generated from (see src/libvirt/generated). */
export { LIBVIRT_PROTOCOL_SOURCE_VERSION } from './generated/constants.gen.js';

export interface OpenOptions {
  readonly logger?: Logger;
  readonly acceptUnknownHostKey?: boolean;
  readonly timeoutMs?: number;
  /** send keepalive pings (default true when the daemon supports them) */
  readonly keepalive?: boolean;
  readonly readonly?: boolean;
}

export const DOMAIN_STATE_NAMES = ['nostate', 'running', 'blocked', 'paused', 'shutdown', 'shutoff', 'crashed', 'pmsuspended'] as const;
export type DomainStateName = (typeof DOMAIN_STATE_NAMES)[number] | 'unknown';

export function domainStateName(state: number): DomainStateName {
  return DOMAIN_STATE_NAMES[state] ?? 'unknown';
}

export const LIFECYCLE_EVENT_NAMES = [
  'defined',
  'undefined',
  'started',
  'suspended',
  'resumed',
  'stopped',
  'shutdown',
  'pmsuspended',
  'crashed',
] as const;
export type LifecycleEventName = (typeof LIFECYCLE_EVENT_NAMES)[number] | 'unknown';

export interface DomainLifecycleEvent {
  readonly domain: { name: string; uuid: string; id: number };
  readonly event: LifecycleEventName;
  readonly eventCode: number;
  readonly detail: number;
  readonly receivedAt: Date;
}

export function uuidToString(b: Uint8Array): string {
  const h = Buffer.from(b).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export class Connection extends EventEmitter<{
  lifecycle: [DomainLifecycleEvent];
  close: [Error | undefined];
}> {
  private capsCache: Promise<string> | undefined;
  private lifecycleCallbackId: number | undefined;
  private lifecycleUnsub: (() => void) | undefined;

  private constructor(
    readonly uri: LibvirtUri,
    readonly transport: ConnectedTransport,
    readonly rpc: RpcClient,
    readonly remote: RemoteProcedures,
    readonly log: Logger,
  ) {
    super();
  }

  static async open(uriString: string, opts: OpenOptions = {}): Promise<Connection> {
    const log = opts.logger ?? silentLogger;
    const uri = parseLibvirtUri(uriString);
    const t0 = performance.now();
    const transport = await connectTransport(uri, {
      acceptUnknownHostKey: opts.acceptUnknownHostKey,
      timeoutMs: opts.timeoutMs,
      readOnly: opts.readonly,
    });
    for (const notice of transport.notices ?? []) log.warn(notice);
    log.debug({ endpoint: transport.description }, 'transport connected');
    const rpc = new RpcClient(transport.stream, { description: transport.description, logger: log });
    const remote = new RemoteProcedures(rpc);
    try {
      await authenticate(remote);
      await openConnection(remote, uri.remoteName, opts.readonly ? 1 : 0);
      if (opts.keepalive !== false) await startKeepaliveIfSupported(rpc, remote);
    } catch (err) {
      rpc.destroy();
      transport.close();
      throw err;
    }
    log.debug({ uri: uri.original, ms: Math.round(performance.now() - t0) }, 'connection open');
    const conn = new Connection(uri, transport, rpc, remote, log);
    rpc.once('close', (err?: Error) => conn.emit('close', err));
    return conn;
  }

  /**
   * How this machine reaches ports on the libvirt host's own loopback (where
   * QEMU user-mode port forwards listen): 'local' — it is this machine;
   * 'tunnel' — through the transport (ssh direct-tcpip), see openTcp;
   * 'none' — tcp/tls connections cannot.
   */
  get hostLoopback(): 'local' | 'tunnel' | 'none' {
    if (this.uri.transport === 'unix') return 'local';
    return this.transport.openTcp ? 'tunnel' : 'none';
  }

  /** A TCP connection opened from the libvirt host's side (hostLoopback 'tunnel' only). */
  openTcp(host: string, port: number): Promise<Duplex> {
    if (!this.transport.openTcp) {
      return Promise.reject(new TransportError('TRANSPORT', `a ${this.uri.transport} connection cannot open connections on ${this.uri.original}'s side`));
    }
    return this.transport.openTcp(host, port);
  }

  async close(): Promise<void> {
    try {
      await this.rpc.close();
    } finally {
      this.transport.close();
    }
  }

  // ---- host ---------------------------------------------------------------

  async libVersion(): Promise<number> {
    return Number((await this.remote.connectGetLibVersion()).libVer);
  }

  async hypervisorType(): Promise<string> {
    return (await this.remote.connectGetType()).type;
  }

  async hypervisorVersion(): Promise<number> {
    return Number((await this.remote.connectGetVersion()).hvVer);
  }

  async hostname(): Promise<string> {
    return (await this.remote.connectGetHostname()).hostname;
  }

  /** Host capabilities XML, fetched once per connection (it costs ~15 s on some hosts). */
  capabilities(): Promise<string> {
    this.capsCache ??= this.remote.connectGetCapabilities().then((r) => r.capabilities);
    return this.capsCache;
  }

  // ---- domains --------------------------------------------------------------

  async listDomains(opts: { active?: boolean; inactive?: boolean } = {}): Promise<Domain[]> {
    const F = VirConnectListAllDomainsFlags;
    let flags = 0;
    if (opts.active !== false) flags |= F.VIR_CONNECT_LIST_DOMAINS_ACTIVE;
    if (opts.inactive) flags |= F.VIR_CONNECT_LIST_DOMAINS_INACTIVE;
    if (opts.active === false && !opts.inactive) return [];
    const r = await this.remote.connectListAllDomains({ needResults: 1, flags });
    return r.domains.map((d) => new Domain(this, d));
  }

  async lookupDomain(name: string): Promise<Domain> {
    return new Domain(this, (await this.remote.domainLookupByName({ name })).dom);
  }

  async lookupDomainByUuid(uuid: Uint8Array): Promise<Domain> {
    return new Domain(this, (await this.remote.domainLookupByUuid({ uuid: Buffer.from(uuid) })).dom);
  }

  async defineDomain(xml: string, flags = 0): Promise<Domain> {
    return new Domain(this, (await this.remote.domainDefineXmlFlags({ xml, flags })).dom);
  }

  /** Subscribe to lifecycle events of every domain (registered once per connection). */
  async subscribeLifecycle(): Promise<void> {
    if (this.lifecycleCallbackId !== undefined) return;
    this.lifecycleUnsub = this.rpc.onEvent(REMOTE_PROGRAM, Procedure.REMOTE_PROC_DOMAIN_EVENT_CALLBACK_LIFECYCLE, (body: Buffer) => {
      const m = decodeDomainEventCallbackLifecycleMsg(XdrReader.from(body));
      if (m.callbackID !== this.lifecycleCallbackId) return;
      this.emit('lifecycle', {
        domain: { name: m.msg.dom.name, uuid: uuidToString(m.msg.dom.uuid), id: m.msg.dom.id },
        event: LIFECYCLE_EVENT_NAMES[m.msg.event] ?? 'unknown',
        eventCode: m.msg.event,
        detail: m.msg.detail,
        receivedAt: new Date(),
      });
    });
    const r = await this.remote.connectDomainEventCallbackRegisterAny({
      eventID: VirDomainEventID.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
      dom: null,
    });
    this.lifecycleCallbackId = r.callbackID;
  }

  async unsubscribeLifecycle(): Promise<void> {
    if (this.lifecycleCallbackId === undefined) return;
    const id = this.lifecycleCallbackId;
    this.lifecycleCallbackId = undefined;
    this.lifecycleUnsub?.();
    await this.remote.connectDomainEventCallbackDeregisterAny({ callbackID: id });
  }

  // ---- storage ------------------------------------------------------------

  async listStoragePools(): Promise<StoragePool[]> {
    const r = await this.remote.connectListAllStoragePools({ needResults: 1, flags: 0 });
    return r.pools.map((p) => new StoragePool(this, p));
  }

  async lookupStoragePool(name: string): Promise<StoragePool> {
    return new StoragePool(this, (await this.remote.storagePoolLookupByName({ name })).pool);
  }

  async defineStoragePool(xml: string): Promise<StoragePool> {
    return new StoragePool(this, (await this.remote.storagePoolDefineXml({ xml, flags: 0 })).pool);
  }

  async lookupStorageVolumeByPath(path: string): Promise<StorageVolume> {
    return new StorageVolume(this, (await this.remote.storageVolLookupByPath({ path })).vol);
  }

  // ---- networks -------------------------------------------------------------

  /** Start a transient domain (gone when it stops); flags e.g. VIR_DOMAIN_START_AUTODESTROY. */
  async createTransientDomain(xml: string, flags = 0): Promise<Domain> {
    return new Domain(this, (await this.remote.domainCreateXml({ xmlDesc: xml, flags })).dom);
  }

  /** Define (or, with the UUID of an existing one, redefine) a secret. */
  async defineSecret(xml: string): Promise<Secret> {
    return new Secret(this, (await this.remote.secretDefineXml({ xml, flags: 0 })).secret);
  }

  async lookupSecretByUsage(usageType: number, usageId: string): Promise<Secret> {
    return new Secret(this, (await this.remote.secretLookupByUsage({ usageType, usageID: usageId })).secret);
  }

  async listSecrets(): Promise<Secret[]> {
    const r = await this.remote.connectListAllSecrets({ needResults: 1, flags: 0 });
    return r.secrets.map((x) => new Secret(this, x));
  }

  async listNetworks(): Promise<Network[]> {
    const r = await this.remote.connectListAllNetworks({ needResults: 1, flags: 0 });
    return r.nets.map((n) => new Network(this, n));
  }

  async lookupNetwork(name: string): Promise<Network> {
    return new Network(this, (await this.remote.networkLookupByName({ name })).net);
  }
}

export class Domain {
  readonly name: string;
  readonly uuid: Buffer;
  readonly id: number;

  constructor(
    readonly conn: Connection,
    readonly ref: NonnullDomain,
  ) {
    this.name = ref.name;
    this.uuid = ref.uuid;
    this.id = ref.id;
  }

  get uuidString(): string {
    return uuidToString(this.uuid);
  }

  private get r(): RemoteProcedures {
    return this.conn.remote;
  }

  info(): Promise<DomainGetInfoRet> {
    return this.r.domainGetInfo({ dom: this.ref });
  }

  async state(): Promise<{ state: DomainStateName; reason: number }> {
    const s = await this.r.domainGetState({ dom: this.ref, flags: 0 });
    return { state: domainStateName(s.state), reason: s.reason };
  }

  async isActive(): Promise<boolean> {
    return (await this.r.domainIsActive({ dom: this.ref })).active === 1;
  }

  async isPersistent(): Promise<boolean> {
    return (await this.r.domainIsPersistent({ dom: this.ref })).persistent === 1;
  }

  async xml(flags = 0): Promise<string> {
    return (await this.r.domainGetXmlDesc({ dom: this.ref, flags })).xml;
  }

  /** Start a defined domain; returns the running domain (with its id). */
  async start(flags = 0): Promise<Domain> {
    return new Domain(this.conn, (await this.r.domainCreateWithFlags({ dom: this.ref, flags })).dom);
  }

  async shutdown(flags = 0): Promise<void> {
    await this.r.domainShutdownFlags({ dom: this.ref, flags });
  }

  async reboot(flags = 0): Promise<void> {
    await this.r.domainReboot({ dom: this.ref, flags });
  }

  async destroy(flags = 0): Promise<void> {
    await this.r.domainDestroyFlags({ dom: this.ref, flags });
  }

  async suspend(): Promise<void> {
    await this.r.domainSuspend({ dom: this.ref });
  }

  async resume(): Promise<void> {
    await this.r.domainResume({ dom: this.ref });
  }

  async undefine(flags = 0): Promise<void> {
    await this.r.domainUndefineFlags({ dom: this.ref, flags });
  }

  /** The guest's interfaces and addresses from one source (VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_*). */
  async interfaceAddresses(source: number): Promise<DomainInterface[]> {
    return (await this.r.domainInterfaceAddresses({ dom: this.ref, source, flags: 0 })).ifaces;
  }

  /** Set (or with null remove) one custom metadata element (VIR_DOMAIN_METADATA_ELEMENT) in namespace `uri`. */
  async setMetadataElement(uri: string, key: string, xml: string | null, flags: number): Promise<void> {
    await this.r.domainSetMetadata({ dom: this.ref, type: 2, metadata: xml, key: xml === null ? null : key, uri, flags });
  }

  /** Serial console (or another character device) as a bidirectional stream. */
  async openConsole(devName: string | null = null, flags = 0): Promise<RpcStream> {
    const { stream } = await this.r.domainOpenConsole({ dom: this.ref, devName, flags });
    return stream;
  }

  async createSnapshot(xml: string, flags = 0): Promise<Snapshot> {
    const r = await this.r.domainSnapshotCreateXml({ dom: this.ref, xmlDesc: xml, flags });
    return new Snapshot(this, r.snap);
  }

  async listSnapshots(flags = 0): Promise<Snapshot[]> {
    const r = await this.r.domainListAllSnapshots({ dom: this.ref, needResults: 1, flags });
    return r.snapshots.map((s) => new Snapshot(this, s));
  }

  async lookupSnapshot(name: string): Promise<Snapshot> {
    const r = await this.r.domainSnapshotLookupByName({ dom: this.ref, name, flags: 0 });
    return new Snapshot(this, r.snap);
  }
}

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

  async start(): Promise<void> {
    await this.conn.remote.networkCreate({ net: this.ref });
  }
}

export { VirDomainEventType, VirDomainState };
