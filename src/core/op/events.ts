/**
 * The typed event stream of an operation: what the CLI renders as phase lines,
 * a live status line and progress bars, what `--progress json` prints as
 * NDJSON on stderr, and what a dashboard can subscribe to. Core code never
 * prints: it emits these through its OpContext.
 */

/** A byte transfer or a counted job (image upload, build, volume copy…). */
export interface ProgressFields {
  phase: string;
  /** bytes done (transfers) or steps/percent done */
  done: number;
  /** bytes/steps total; absent when unknown */
  total?: number;
  message?: string;
  image?: string;
  item?: string;
  /** present on byte transfers */
  bytesPerSecond?: number;
  etaSeconds?: number | null;
  /** last event of a transfer phase */
  finished?: boolean;
}

export type OpEvent =
  /** a readiness phase reached (create/start: defined, started, ip, sshd, cloud-init) */
  | { type: 'phase'; phase: string; detail?: string }
  /** a timed step of the operation began or ended (spans) */
  | { type: 'step'; step: string; state: 'start' | 'end' | 'fail'; durationMs?: number }
  /** the operation now waits for something outside it (an IP, sshd, a lock…); `what` says what */
  | { type: 'wait'; what: string }
  | ({ type: 'progress' } & ProgressFields)
  | { type: 'warning'; message: string }
  /** something worth a line that is neither a phase nor a warning */
  | { type: 'notice'; message: string }
  /** one undo step of a failed or interrupted operation */
  | { type: 'undo'; what: string; ok: boolean; error?: string }
  /** a test-only fault point (VMCTL_FAULT) fired */
  | { type: 'fault'; point: string; action: string };

/** An event as delivered: which operation, when (ms since it began, and wall time). */
export type OpEventEnvelope = OpEvent & { op: string; opId: string; atMs: number; ts: string; scope?: string };

export type OpEventSink = (e: OpEventEnvelope) => void;
