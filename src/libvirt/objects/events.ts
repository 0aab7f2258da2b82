/**
 * Domain lifecycle events: names, the event record, and the per-connection
 * subscription (one libvirt callback for every domain, registered once).
 */
import type { RpcClient } from '../rpc/client.js';
import { Procedure, REMOTE_PROGRAM, decodeDomainEventCallbackLifecycleMsg, type RemoteProcedures } from '../generated/remote.gen.js';
import { VirDomainEventID } from '../generated/constants.gen.js';
import { XdrReader } from '../xdr/index.js';
import { uuidToString } from './uuid.js';

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

/** The lifecycle callback of one connection: `emit` gets every decoded event while subscribed. */
export class LifecycleSubscription {
  private callbackId: number | undefined;
  private unsub: (() => void) | undefined;

  constructor(
    private readonly rpc: RpcClient,
    private readonly remote: RemoteProcedures,
    private readonly emit: (e: DomainLifecycleEvent) => void,
  ) {}

  async subscribe(): Promise<void> {
    if (this.callbackId !== undefined) return;
    this.unsub = this.rpc.onEvent(REMOTE_PROGRAM, Procedure.REMOTE_PROC_DOMAIN_EVENT_CALLBACK_LIFECYCLE, (body: Buffer) => {
      const m = decodeDomainEventCallbackLifecycleMsg(XdrReader.from(body));
      if (m.callbackID !== this.callbackId) return;
      this.emit({
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
    this.callbackId = r.callbackID;
  }

  async unsubscribe(): Promise<void> {
    if (this.callbackId === undefined) return;
    const id = this.callbackId;
    this.callbackId = undefined;
    this.unsub?.();
    await this.remote.connectDomainEventCallbackDeregisterAny({ callbackID: id });
  }
}
