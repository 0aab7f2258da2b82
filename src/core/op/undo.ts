/**
 * The undo stack of an operation: each change registers how to take it back,
 * and a failed or interrupted operation runs them in reverse. Undo steps get the
 * connection to use, so they still work after the operation reconnected (e.g.
 * libvirtd was restarted in the middle). A step declared without that parameter
 * (`() => rmSync(dir)`, or one that uses another host's connection) needs no
 * connection to the operation's daemon and runs even while it is down.
 */
import type { Connection } from '../../libvirt/connection.js';

export interface UndoStep {
  what: string;
  undo: (conn: Connection) => Promise<void> | void;
}

export class UndoStack {
  private steps: UndoStep[] = [];

  push(what: string, undo: UndoStep['undo']): void {
    this.steps.push({ what, undo });
  }

  get size(): number {
    return this.steps.length;
  }

  /** Success: nothing to take back any more. */
  commit(): void {
    this.steps = [];
  }

  /** Take everything back, newest first; reports each step; never throws. Returns the steps that failed. */
  async unwind(
    conn: () => Promise<Connection>,
    report: (what: string, ok: boolean, error?: string) => void,
  ): Promise<string[]> {
    const failed: string[] = [];
    const steps = this.steps.reverse();
    this.steps = [];
    for (const s of steps) {
      try {
        // a step that takes no connection does not wait for the daemon (e.g. a local directory)
        await s.undo(s.undo.length === 0 ? (undefined as unknown as Connection) : await conn());
        report(s.what, true);
      } catch (err) {
        failed.push(s.what);
        report(s.what, false, (err as Error).message);
      }
    }
    return failed;
  }
}
