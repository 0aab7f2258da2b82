/**
 * Typed high-level layer over the generated procedures: the Connection (host,
 * lookups, defines, lifecycle subscription). The object wrappers live in
 * ./objects/ (Domain, Snapshot, StoragePool, StorageVolume, Secret, Network,
 * lifecycle events, jobs) and are re-exported here. What vmctl's core uses;
 * everything else stays reachable through `conn.remote` (the full generated
 * API) — but only inside src/libvirt (eslint forbids `.remote` in core/cli).
 *
 * Imports: objects/* import `Connection` as a type only, so there is no
 * runtime cycle between this file and them.
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { silentLogger } from './log.js';
import { parseLibvirtUri } from './uri.js';
import { connectTransport } from './transport/index.js';
import type { ConnectedTransport, LibvirtUri } from './transport/types.js';
import { TransportError } from './transport/errors.js';
import { RpcClient } from './rpc/client.js';
import { authenticate, openConnection, startKeepaliveIfSupported } from './rpc/auth.js';
import { RemoteProcedures } from './generated/remote.gen.js';
import { VirConnectListAllDomainsFlags, VirDomainEventType, VirDomainState } from './generated/constants.gen.js';
import { Domain } from './objects/domain.js';
import { StoragePool, StorageVolume } from './objects/storage.js';
import { Secret } from './objects/secret.js';
import { Network } from './objects/network.js';
import { LifecycleSubscription, type DomainLifecycleEvent } from './objects/events.js';

export { Domain, DOMAIN_STATE_NAMES, domainStateName, type DomainStateName } from './objects/domain.js';
export { Snapshot } from './objects/snapshot.js';
export { Checkpoint } from './objects/checkpoint.js';
export { StoragePool, StorageVolume } from './objects/storage.js';
export { Secret } from './objects/secret.js';
export { Network } from './objects/network.js';
export { LIFECYCLE_EVENT_NAMES, type LifecycleEventName, type DomainLifecycleEvent } from './objects/events.js';
export {
  DOMAIN_JOB_TYPE_NAMES,
  BLOCK_JOB_TYPE_NAMES,
  typedParamsToRecord,
  type DomainJobTypeName,
  type BlockJobTypeName,
  type DomainJobStats,
  type BlockJobInfo,
  type TypedParamScalar,
} from './objects/jobs.js';
export { uuidToString } from './objects/uuid.js';
export {
  MIGRATE_PARAM,
  MigrateFlags,
  DirectMigrationError,
  migrateTypedParams,
  migratePeerToPeer,
  migrateDirect,
  setMigrateMaxDowntime,
  setMigrateMaxSpeed,
  startPostCopy,
  lookupAfter,
  type MigrateParams,
} from './objects/migration.js';

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

export class Connection extends EventEmitter<{
  lifecycle: [DomainLifecycleEvent];
  close: [Error | undefined];
}> {
  private capsCache: Promise<string> | undefined;
  private readonly lifecycleSub: LifecycleSubscription;

  private constructor(
    readonly uri: LibvirtUri,
    readonly transport: ConnectedTransport,
    readonly rpc: RpcClient,
    readonly remote: RemoteProcedures,
    readonly log: Logger,
  ) {
    super();
    this.lifecycleSub = new LifecycleSubscription(rpc, remote, (e) => this.emit('lifecycle', e));
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

  /** Free memory of the host (bytes). */
  async freeMemory(): Promise<bigint> {
    return (await this.remote.nodeGetFreeMemory()).freeMem;
  }

  /** Total memory (KiB), CPUs of the host. */
  async nodeInfo(): Promise<{ memoryKiB: bigint; cpus: number; model: string }> {
    const r = await this.remote.nodeGetInfo();
    return { memoryKiB: r.memory, cpus: r.cpus, model: Buffer.from(r.model.filter((c) => c !== 0)).toString('latin1') };
  }

  /** VIR_CPU_COMPARE_* of a guest CPU definition against what this host's hypervisor can run. */
  async compareHypervisorCpu(cpuXml: string, o: { arch?: string; machine?: string; virttype?: string } = {}): Promise<number> {
    const r = await this.remote.connectCompareHypervisorCpu({ emulator: null, arch: o.arch ?? null, machine: o.machine ?? null, virttype: o.virttype ?? null, xmlCPU: cpuXml, flags: 0 });
    return r.result;
  }

  /** The CPU model all of `cpuXmls` can run (as a <cpu> XML), on this host's hypervisor. */
  async baselineHypervisorCpu(cpuXmls: string[], o: { arch?: string; machine?: string; virttype?: string } = {}, flags = 0): Promise<string> {
    const r = await this.remote.connectBaselineHypervisorCpu({ emulator: null, arch: o.arch ?? null, machine: o.machine ?? null, virttype: o.virttype ?? null, xmlCPUs: cpuXmls, flags });
    return r.cpu;
  }

  /** Domain capabilities XML (what QEMU on this host supports for virttype/arch/machine). */
  async domainCapabilities(o: { arch?: string; machine?: string; virttype?: string } = {}): Promise<string> {
    const r = await this.remote.connectGetDomainCapabilities({ emulatorbin: null, arch: o.arch ?? null, machine: o.machine ?? null, virttype: o.virttype ?? null, flags: 0 });
    return r.capabilities;
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

  /** Restore a domain from a saved memory image on the host, with `dxml` as its new definition (VIR_DOMAIN_SAVE_RUNNING / _PAUSED). */
  async restoreDomain(path: string, dxml: string | null, flags = 0): Promise<void> {
    await this.remote.domainRestoreFlags({ from: path, dxml, flags });
  }

  /** Start a transient domain (gone when it stops); flags e.g. VIR_DOMAIN_START_AUTODESTROY. */
  async createTransientDomain(xml: string, flags = 0): Promise<Domain> {
    return new Domain(this, (await this.remote.domainCreateXml({ xmlDesc: xml, flags })).dom);
  }

  /** Subscribe to lifecycle events of every domain (registered once per connection; events arrive as 'lifecycle'). */
  subscribeLifecycle(): Promise<void> {
    return this.lifecycleSub.subscribe();
  }

  unsubscribeLifecycle(): Promise<void> {
    return this.lifecycleSub.unsubscribe();
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

  // ---- secrets --------------------------------------------------------------

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

  // ---- networks -------------------------------------------------------------

  async listNetworks(): Promise<Network[]> {
    const r = await this.remote.connectListAllNetworks({ needResults: 1, flags: 0 });
    return r.nets.map((n) => new Network(this, n));
  }

  async lookupNetwork(name: string): Promise<Network> {
    return new Network(this, (await this.remote.networkLookupByName({ name })).net);
  }

  /** Define a persistent network (not started). */
  async defineNetwork(xml: string): Promise<Network> {
    return new Network(this, (await this.remote.networkDefineXml({ xml })).net);
  }
}

export { VirDomainEventType, VirDomainState };
