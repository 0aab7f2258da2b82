/**
 * The operation context every command runs in: the connection(s) it holds,
 * its AbortSignal (Ctrl-C and SIGTERM alike), its logger, its undo stack, the
 * leases it took, and its event stream. `runOperation` is the one place where
 * a failure or an interruption becomes "undo what was made, then report":
 *
 *   await runOperation({ kind: 'create', open, signal, log, sink }, async (op) => {
 *     const lease = await op.lease(`vm/${name}`, `VM '${name}'`);
 *     const vol = await pool.createVolume(xml);
 *     op.undo.push(`volume ${vol.name}`, (conn) => deleteVolume(conn, …));
 *     await op.fault('after-volumes');
 *     …
 *   });
 *
 * Undo steps receive a live connection: if the daemon went away (libvirtd
 * restarted), the context reconnects before undoing.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { silentLogger } from '../log.js';
import { VmctlError, toVmctlError } from '../errors.js';
import type { Connection } from '../../libvirt/connection.js';
import type { OpEvent, OpEventSink, ProgressFields } from './events.js';
import { UndoStack } from './undo.js';
import { faultAt, performFault } from './fault.js';
import { Lease } from './lease.js';

export interface OperationInit {
  /** the command: create, start, delete, image-build… (also the VMCTL_FAULT prefix) */
  kind: string;
  /** opens the operation's (first) connection; called again to reconnect */
  open: () => Promise<Connection>;
  /** opens further connections by URI (migration, restore on another host) */
  openUri?: (uri: string) => Promise<Connection>;
  signal?: AbortSignal;
  log?: Logger;
  sink?: OpEventSink;
  /** how long undo may wait for the daemon to come back (default 20 s) */
  reconnectMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What an operation and all its scoped views share. */
class OpShared {
  readonly id = randomUUID();
  readonly t0 = performance.now();
  current: Connection | undefined;
  currentLost = false;
  readonly owned = new Set<Connection>();
  readonly leases: Lease[] = [];
  readonly others = new Map<string, Connection>();
}

export class OpContext {
  readonly log: Logger;
  readonly signal: AbortSignal;
  private readonly s: OpShared;
  /** what this view works on (a lab's VM…): added to its events as `scope` */
  readonly scope: string | undefined;
  readonly undo: UndoStack;

  constructor(
    private readonly init: OperationInit,
    shared?: OpShared,
    scope?: string,
    undo?: UndoStack,
  ) {
    this.s = shared ?? new OpShared();
    this.scope = scope;
    this.undo = undo ?? new UndoStack();
    this.log = scope ? (init.log ?? silentLogger).child({ scope }) : (init.log ?? silentLogger);
    this.signal = init.signal ?? new AbortController().signal;
  }

  /**
   * A view of this operation for one of the things it works on side by side
   * (the VMs of a lab): same connections, leases and undo stack; its events
   * carry `scope`. `signal` replaces the signal (e.g. one that also fires when
   * a sibling fails); `ownUndo` gives it an undo stack of its own, for a step
   * whose own commit() must not commit the whole operation (the caller
   * unwinds or keeps it).
   */
  scoped(scope: string, o: { signal?: AbortSignal; ownUndo?: boolean } = {}): OpContext {
    return new OpContext(o.signal ? { ...this.init, signal: o.signal } : this.init, this.s, this.scope ? `${this.scope}/${scope}` : scope, o.ownUndo ? undefined : this.undo);
  }

  /** Undo what this view's own undo stack holds (see scoped), reporting each step. */
  async unwindOwn(): Promise<string[]> {
    return this.undo.unwind(
      () => this.liveConnection(),
      (what, ok, error) => this.emit({ type: 'undo', what, ok, ...(error ? { error } : {}) }),
    );
  }

  get id(): string {
    return this.s.id;
  }

  get t0(): number {
    return this.s.t0;
  }

  get kind(): string {
    return this.init.kind;
  }

  /** ms since the operation began */
  get elapsedMs(): number {
    return Math.round(performance.now() - this.s.t0);
  }

  /** The operation's connection. */
  get conn(): Connection {
    if (!this.s.current) throw new VmctlError('INTERNAL', 'operation has no connection yet');
    return this.s.current;
  }

  /** @internal first connection, made by runOperation */
  async connect(): Promise<Connection> {
    return this.adopt(await this.init.open());
  }

  private adopt(conn: Connection): Connection {
    const s = this.s;
    s.owned.add(conn);
    s.current = conn;
    s.currentLost = false;
    conn.once('close', () => {
      if (s.current === conn) s.currentLost = true;
    });
    return conn;
  }

  /** The connection, reopened if the daemon dropped it (waits up to reconnectMs). */
  async liveConnection(): Promise<Connection> {
    if (this.s.current && !this.s.currentLost) return this.s.current;
    const deadline = performance.now() + (this.init.reconnectMs ?? 20_000);
    let last: unknown;
    while (performance.now() < deadline) {
      try {
        const conn = this.adopt(await this.init.open());
        this.log.info('reconnected to libvirt');
        return conn;
      } catch (e) {
        last = e;
        await sleep(500);
      }
    }
    throw toVmctlError(last ?? new Error('cannot reconnect'));
  }

  /** A further connection (another host), closed with the operation. */
  async connection(uri: string): Promise<Connection> {
    const have = this.s.others.get(uri);
    if (have) return have;
    if (!this.init.openUri) throw new VmctlError('INTERNAL', 'this operation cannot open other connections');
    const conn = await this.init.openUri(uri);
    this.s.owned.add(conn);
    this.s.others.set(uri, conn);
    return conn;
  }

  emit(e: OpEvent): void {
    this.init.sink?.({ ...e, op: this.kind, opId: this.id, atMs: this.elapsedMs, ts: new Date().toISOString(), ...(this.scope ? { scope: this.scope } : {}) });
  }

  phase(phase: string, detail?: string): void {
    this.emit({ type: 'phase', phase, ...(detail ? { detail } : {}) });
  }

  warn(message: string): void {
    this.log.debug({ warning: message }, 'warning');
    this.emit({ type: 'warning', message });
  }

  notice(message: string): void {
    this.emit({ type: 'notice', message });
  }

  /** the operation now waits for `what` (the CLI shows it with the time so far) */
  waiting(what: string): void {
    this.emit({ type: 'wait', what });
  }

  progress(p: ProgressFields): void {
    this.emit({ type: 'progress', ...p });
  }

  /** A timed step: start/end (or fail) events with its duration. */
  async step<T>(step: string, fn: () => Promise<T>): Promise<T> {
    const t = performance.now();
    this.emit({ type: 'step', step, state: 'start' });
    try {
      const r = await fn();
      this.emit({ type: 'step', step, state: 'end', durationMs: Math.round(performance.now() - t) });
      return r;
    } catch (e) {
      this.emit({ type: 'step', step, state: 'fail', durationMs: Math.round(performance.now() - t) });
      throw e;
    }
  }

  throwIfAborted(): void {
    if (this.signal.aborted) throw abortError(this.kind, this.signal);
  }

  /** A named fault point (VMCTL_FAULT=KIND:POINT:ACTION, tests only). */
  async fault(point: string): Promise<void> {
    const action = faultAt(this.kind, point);
    if (!action) return;
    const name = `${this.kind}:${point}`;
    this.emit({ type: 'fault', point: name, action: action.kind === 'sleep' ? `sleep=${action.ms}` : action.kind });
    // a sleep ends early on Ctrl-C; the operation then stops at its next check, as it would have
    // (a fault point adds no throw of its own: some sit in callbacks whose errors nobody awaits)
    await performFault(name, action, this.signal);
  }

  /** Take the lease on `resource` for the rest of the operation (released at its end). */
  async lease(resource: string, what: string): Promise<Lease> {
    // re-entrant: a step of this operation may ask again for what the operation holds
    const held = this.s.leases.find((l) => l.resource === resource);
    if (held) return held;
    const lease = await Lease.acquire(() => this.conn, resource, { kind: this.kind, id: this.id, what }, ...this.renewReports(resource));
    this.s.leases.push(lease);
    return lease;
  }

  /** A lease on another host of the operation (a connection from op.connection). */
  async leaseOn(conn: Connection, resource: string, what: string): Promise<Lease> {
    const lease = await Lease.acquire(() => conn, resource, { kind: this.kind, id: this.id, what }, ...this.renewReports(resource));
    this.s.leases.push(lease);
    return lease;
  }

  /** a lease's renewal failing (logged once until it works again) and working again */
  private renewReports(resource: string): [(err: Error) => void, () => void] {
    return [
      (err) => this.log.warn({ err: err.message, resource }, 'could not renew lease (retrying every 10 s; said again only once it works)'),
      () => this.log.info({ resource }, 'lease renewed again'),
    ];
  }

  /** @internal */
  async finish(): Promise<void> {
    for (const l of this.s.leases.splice(0).reverse()) {
      try {
        if (this.s.currentLost) await this.liveConnection();
        await l.release();
      } catch (e) {
        this.log.warn({ err: (e as Error).message, resource: l.resource }, 'could not release lease (it expires by itself)');
      }
    }
    await Promise.all([...this.s.owned].map((c) => c.close().catch(() => undefined)));
    this.s.owned.clear();
  }
}

/** The one error an interruption becomes (exit 130). */
export function abortError(kind: string, signal?: AbortSignal, left: string[] = []): VmctlError {
  const why = signal?.reason instanceof VmctlError && signal.reason.code === 'ABORTED' ? signal.reason.message : `${kind} interrupted`;
  return left.length === 0
    ? new VmctlError('ABORTED', why, { hint: 'nothing it made was left behind' })
    : new VmctlError('ABORTED', why, { hint: `could not remove ${left.join(', ')}: vmctl delete removes what is left`, details: { left } });
}

/**
 * Run an operation: connect, run `fn`, and on failure or interruption undo
 * what it made (newest first), then rethrow — an interruption as ABORTED.
 * Leases are released and connections closed in every case.
 */
export async function runOperation<T>(init: OperationInit, fn: (op: OpContext) => Promise<T>): Promise<T> {
  const op = new OpContext(init);
  try {
    await op.connect();
    const r = await fn(op);
    op.undo.commit();
    return r;
  } catch (err) {
    let left: string[] = [];
    if (op.undo.size > 0) {
      op.log.info({ err: (err as Error).message }, `${op.kind} failed; undoing what it made`);
      left = await op.undo.unwind(
        () => op.liveConnection(),
        (what, ok, error) => op.emit({ type: 'undo', what, ok, ...(error ? { error } : {}) }),
      );
    }
    if (op.signal.aborted) {
      const coreLeft = err instanceof VmctlError && Array.isArray(err.details?.leftVolumes) ? (err.details.leftVolumes as string[]) : [];
      throw abortError(op.kind, op.signal, [...left, ...coreLeft]);
    }
    const e = toVmctlError(err);
    if (left.length > 0 && !e.details?.left) {
      throw new VmctlError(e.code, e.message, {
        hint: `${e.hint ? `${e.hint}; ` : ''}could not undo ${left.join(', ')}: vmctl delete removes what is left`,
        cause: err,
        details: { ...e.details, left },
      });
    }
    throw err;
  } finally {
    await op.finish();
  }
}
