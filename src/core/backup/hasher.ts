/**
 * SHA-256 of chunks on worker threads (up to THREADS, started as chunks wait):
 * hashing every stored byte is the largest CPU cost of storing a disk, so it
 * stays off the thread that reads and writes. Without a copy: a chunk whose
 * memory is a SharedArrayBuffer (what the disk reader allocates) is shared
 * with the worker; any other is hashed in place on the calling thread.
 *
 * The workers' code is inline (eval), so the bundle needs no file beside it.
 * They are started on use, unref'd (they never keep the process alive) and
 * ended by close().
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
parentPort.on('message', (m) => {
  parentPort.postMessage({ id: m.id, sha: createHash('sha256').update(m.buf).digest('hex') });
});
`;

/**
 * Buffers of shared memory that ChunkHasher can hand to its thread without copying, reused: a fresh
 * 4 MiB buffer per chunk costs more in page faults than reading the chunk into it.
 */
export class SharedBufferPool {
  private readonly free: Buffer[] = [];
  constructor(private readonly size: number) {}

  /** A buffer of `n` <= size bytes (contents undefined), until release(). */
  acquire(n: number): Buffer {
    if (n > this.size) return Buffer.from(new SharedArrayBuffer(n));
    return (this.free.pop() ?? Buffer.from(new SharedArrayBuffer(this.size))).subarray(0, n);
  }

  release(buf: Buffer): void {
    if (buf.buffer.byteLength === this.size && buf.byteOffset === 0) this.free.push(Buffer.from(buf.buffer, 0, this.size));
  }
}

/** Hashing threads per payload file: chunks are spread over them (least busy first). */
const THREADS = Math.max(1, Number(process.env['VMCTL_BACKUP_HASH_THREADS'] ?? 2));

interface HashThread {
  worker: Worker;
  pending: number;
}

export class ChunkHasher {
  private threads: HashThread[] = [];
  private nextId = 0;
  private readonly waiting = new Map<number, { resolve: (sha: string) => void; reject: (e: Error) => void; thread: HashThread }>();
  private failure: Error | undefined;

  /** The hex SHA-256 of `buf` (which must not change until the promise settles). */
  digest(buf: Buffer): Promise<string> {
    if (!(buf.buffer instanceof SharedArrayBuffer) || this.failure) return Promise.resolve(createHash('sha256').update(buf).digest('hex'));
    const t = this.pick();
    const id = this.nextId++;
    t.pending++;
    return new Promise<string>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, thread: t });
      t.worker.postMessage({ id, buf });
    });
  }

  private pick(): HashThread {
    if (this.threads.length < THREADS && !this.threads.some((t) => t.pending === 0)) return this.start();
    return this.threads.reduce((a, b) => (b.pending < a.pending ? b : a));
  }

  private start(): HashThread {
    const w = new Worker(WORKER_SOURCE, { eval: true });
    w.unref();
    const t: HashThread = { worker: w, pending: 0 };
    w.on('message', (m: { id: number; sha: string }) => {
      const p = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (p) p.thread.pending--;
      p?.resolve(m.sha);
    });
    const fail = (e: Error) => {
      this.failure ??= e;
      for (const p of this.waiting.values()) p.reject(e);
      this.waiting.clear();
      this.threads = [];
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`a hashing thread exited (code ${code})`)));
    this.threads.push(t);
    return t;
  }

  async close(): Promise<void> {
    const ts = this.threads;
    this.threads = [];
    if (ts.length > 0) {
      this.failure ??= new Error('the hashing threads were closed');
      await Promise.all(ts.map((t) => t.worker.terminate()));
    }
  }
}
