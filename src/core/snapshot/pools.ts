import type { OpContext } from '../op/context.js';

/** Files libvirt made next to pool volumes (external overlays, memory images) become volumes once the pools are refreshed. */
export async function refreshPools(op: OpContext): Promise<void> {
  for (const p of await op.conn.listStoragePools()) {
    if (await p.isActive()) await p.refresh().catch(() => undefined);
  }
}
