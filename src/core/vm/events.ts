/**
 * Lifecycle events of the VMs on one connection, as they happen: subscribe,
 * hand every event (of one VM, if `name` is given) to `onEvent`, and return
 * when `signal` aborts or the connection closes — unsubscribed either way.
 */
import type { Connection, DomainLifecycleEvent } from '../../libvirt/connection.js';

export type { DomainLifecycleEvent };

export interface WatchEventsOptions {
  /** only this VM's events */
  readonly name?: string;
  readonly signal?: AbortSignal;
}

/** Why watchVmEvents returned. */
export type WatchEnd = 'aborted' | 'closed';

export async function watchVmEvents(conn: Connection, opts: WatchEventsOptions, onEvent: (e: DomainLifecycleEvent) => void): Promise<WatchEnd> {
  const { name, signal } = opts;
  const listener = (e: DomainLifecycleEvent) => {
    if (name && e.domain.name !== name) return;
    onEvent(e);
  };
  let onAbort: (() => void) | undefined;
  let onClose: (() => void) | undefined;
  conn.on('lifecycle', listener);
  try {
    const ended = new Promise<WatchEnd>((resolve) => {
      onAbort = () => resolve('aborted');
      onClose = () => resolve('closed');
      signal?.addEventListener('abort', onAbort, { once: true });
      conn.once('close', onClose);
    });
    if (signal?.aborted) return 'aborted';
    await conn.subscribeLifecycle();
    return await ended;
  } finally {
    conn.off('lifecycle', listener);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
    if (onClose) conn.off('close', onClose);
    await conn.unsubscribeLifecycle().catch(() => undefined);
  }
}
