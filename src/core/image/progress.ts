/** Transfer progress (bytes, rate, ETA), hashing on the way, and aborts. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { VmctlError } from '../errors.js';
import type { ImageProgress, ImageVolumeKind, TransferPhase } from './types.js';

const REPORT_EVERY_MS = 200;
const RATE_WINDOW_MS = 5000;

/** Counts bytes of one phase and reports rate/ETA at most every 200 ms. */
export class Meter {
  private bytes = 0;
  private lastReport = 0;
  private readonly samples: Array<[number, number]> = [];
  item: ImageVolumeKind;

  constructor(
    private readonly phase: TransferPhase,
    private readonly image: string,
    private readonly total: number | null,
    item: ImageVolumeKind,
    private readonly emit: ((p: ImageProgress) => void) | undefined,
  ) {
    this.item = item;
  }

  add(n: number): void {
    this.bytes += n;
    if (Date.now() - this.lastReport >= REPORT_EVERY_MS) this.report(false);
  }

  /** switch to the next item (reported right away) */
  next(item: ImageVolumeKind): void {
    this.item = item;
    this.report(false);
  }

  finish(): void {
    this.report(true);
  }

  private report(done: boolean): void {
    if (!this.emit) return;
    const now = Date.now();
    this.lastReport = now;
    this.samples.push([now, this.bytes]);
    while (this.samples.length > 2 && now - this.samples[0]![0] > RATE_WINDOW_MS) this.samples.shift();
    const [t0, b0] = this.samples[0]!;
    const rate = now > t0 ? ((this.bytes - b0) * 1000) / (now - t0) : 0;
    const eta = this.total !== null && rate > 0 ? Math.max(0, (this.total - this.bytes) / rate) : null;
    try {
      this.emit({
        phase: this.phase,
        image: this.image,
        item: this.item,
        done: this.bytes,
        ...(this.total !== null ? { total: this.total } : {}),
        bytesPerSecond: Math.round(rate),
        etaSeconds: done ? 0 : eta === null ? null : Math.round(eta),
        finished: done,
      });
    } catch {
      // a progress renderer must never break a transfer
    }
  }
}

/** Re-yields a byte stream, hashing and counting it. */
export async function* tapped(source: AsyncIterable<Buffer>, hash: ReturnType<typeof createHash>, meter: Meter): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    hash.update(chunk);
    meter.add(chunk.length);
    yield chunk;
  }
}

export async function hashFile(path: string, meter: Meter, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024, ...(signal ? { signal } : {}) }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    meter.add(chunk.length);
  }
  return hash.digest('hex');
}

// ---------------------------------------------------------------------------------------------
// abort
// ---------------------------------------------------------------------------------------------

export function abortedError(what: string, signal: AbortSignal): VmctlError {
  const reason: unknown = signal.reason;
  if (reason instanceof VmctlError) return reason;
  return new VmctlError('ABORTED', `${what} interrupted`, { details: { aborted: true }, cause: reason });
}

/** True for errors that an abort produced (AbortError, or any error after the signal fired). */
export function isAbort(err: unknown, signal?: AbortSignal): boolean {
  return signal?.aborted === true || (err instanceof Error && err.name === 'AbortError');
}
