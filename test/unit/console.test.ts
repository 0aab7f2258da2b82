/** The console pump (src/core/guest/console.ts) with fake streams: escape handling, ends, raw mode. */
import { Duplex, PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { attachConsole, pumpConsole, scanForMarker, watchConsoleFor, CONSOLE_ESCAPE, type ConsoleStream } from '../../src/core/guest/console.js';
import { LibvirtError } from '../../src/libvirt/errors.js';
import { VmctlError } from '../../src/core/errors.js';

/** A fake console stream: what vmctl writes lands in `toGuest`, `fromGuest.write()` is what the guest prints. */
function fakeConsole() {
  const toGuest: Buffer[] = [];
  const fromGuest = new PassThrough();
  let aborted = 0;
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      toGuest.push(Buffer.from(chunk));
      cb();
    },
  }) as ConsoleStream;
  fromGuest.on('data', (d: Buffer) => stream.push(d));
  fromGuest.on('end', () => stream.push(null));
  stream.abort = () => {
    aborted++;
    stream.destroy();
  };
  return { stream, fromGuest, sent: () => Buffer.concat(toGuest).toString('latin1'), aborted: () => aborted };
}

function collect(s: PassThrough): () => string {
  let out = '';
  s.on('data', (d: Buffer) => (out += d.toString('latin1')));
  return () => out;
}

const tick = () => new Promise((r) => setImmediate(r));

describe('console pump', () => {
  it('forwards both ways and leaves on Ctrl-], sending what precedes it in the same chunk', async () => {
    const c = fakeConsole();
    const input = new PassThrough();
    const output = new PassThrough();
    const shown = collect(output);
    const ended = pumpConsole(c.stream, { input, output });
    input.write('root\r');
    c.fromGuest.write('Password: ');
    await tick();
    expect(shown()).toBe('Password: ');
    input.write(Buffer.concat([Buffer.from('ls'), Buffer.from([CONSOLE_ESCAPE]), Buffer.from('never sent')]));
    expect(await ended).toBe('escape');
    expect(c.sent()).toBe('root\rls');
    expect(c.aborted()).toBe(1);
    // nothing more flows after leaving
    input.write('more');
    await tick();
    expect(c.sent()).toBe('root\rls');
  });

  it('an escape byte at the start of a chunk sends nothing of that chunk', async () => {
    const c = fakeConsole();
    const input = new PassThrough();
    const ended = pumpConsole(c.stream, { input, output: new PassThrough() });
    input.write(Buffer.from([CONSOLE_ESCAPE, 0x41]));
    expect(await ended).toBe('escape');
    expect(c.sent()).toBe('');
  });

  it('a custom escape byte, and Ctrl-] is then an ordinary byte', async () => {
    const c = fakeConsole();
    const input = new PassThrough();
    const ended = pumpConsole(c.stream, { input, output: new PassThrough(), escape: 0x18 });
    input.write(Buffer.from([0x41, CONSOLE_ESCAPE, 0x42, 0x18]));
    expect(await ended).toBe('escape');
    expect([...Buffer.from(c.sent(), 'latin1')]).toEqual([0x41, CONSOLE_ESCAPE, 0x42]);
  });

  it('returns when the input ends, when the console ends, and on abort', async () => {
    const a = fakeConsole();
    const inA = new PassThrough();
    const endA = pumpConsole(a.stream, { input: inA, output: new PassThrough() });
    inA.end();
    expect(await endA).toBe('input-end');
    expect(a.aborted()).toBe(1);

    const b = fakeConsole();
    const endB = pumpConsole(b.stream, { input: new PassThrough(), output: new PassThrough() });
    b.fromGuest.end('bye\r\n');
    expect(await endB).toBe('console-end');

    const c = fakeConsole();
    const ac = new AbortController();
    const endC = pumpConsole(c.stream, { input: new PassThrough(), output: new PassThrough(), signal: ac.signal });
    ac.abort();
    expect(await endC).toBe('aborted');
    expect(c.aborted()).toBe(1);
  });

  it('a console stream error ends the session without throwing', async () => {
    const c = fakeConsole();
    const ended = pumpConsole(c.stream, { input: new PassThrough(), output: new PassThrough() });
    c.stream.destroy(new Error('daemon said no'));
    expect(await ended).toBe('console-error');
  });

  it('puts a TTY input in raw mode for the session and restores it', async () => {
    const c = fakeConsole();
    const modes: boolean[] = [];
    const input = Object.assign(new PassThrough(), { isTTY: true, setRawMode: (on: boolean) => modes.push(on) });
    const ended = pumpConsole(c.stream, { input, output: new PassThrough() });
    expect(modes).toEqual([true]);
    input.write(Buffer.from([CONSOLE_ESCAPE]));
    await ended;
    expect(modes).toEqual([true, false]);
  });

  it('attachConsole opens the domain console (unless already aborted)', async () => {
    const c = fakeConsole();
    let opened = 0;
    const dom = { name: 'vm1', openConsole: async () => (opened++, c.stream as never) };
    const input = new PassThrough();
    const ended = attachConsole(dom, { input, output: new PassThrough() });
    await tick();
    input.write(Buffer.from([CONSOLE_ESCAPE]));
    expect(await ended).toBe('escape');
    expect(opened).toBe(1);
    expect(await attachConsole(dom, { input, output: new PassThrough(), signal: AbortSignal.abort() })).toBe('aborted');
    expect(opened).toBe(1);
  });

  it('attachConsole refuses a console in use elsewhere with the fix, and forces on request', async () => {
    const c = fakeConsole();
    const flags: number[] = [];
    const busy = new LibvirtError('operation failed: Active console session exists for this domain', { kind: 'remote', code: 9 });
    const dom = {
      name: 'vm1',
      openConsole: async (_dev: string | null, f: number) => {
        flags.push(f);
        if (f === 0) throw busy;
        return c.stream as never;
      },
    };
    const input = new PassThrough();
    const err = await attachConsole(dom, { input, output: new PassThrough() }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmctlError);
    expect((err as VmctlError).code).toBe('CONFLICT');
    expect((err as VmctlError).hint).toContain('vmctl console vm1 --force');
    let opened = 0;
    const ended = attachConsole(dom, { input, output: new PassThrough() }, { force: true, onOpen: () => opened++ });
    await tick();
    expect(opened).toBe(1);
    input.write(Buffer.from([CONSOLE_ESCAPE]));
    expect(await ended).toBe('escape');
    expect(flags).toEqual([0, 1]);
  });
});

describe('watching the console for a marker', () => {
  it('finds a marker split across chunks, then closes the stream', async () => {
    const c = fakeConsole();
    const seen = scanForMarker(c.stream, 'vmctl: sshd ready', new AbortController().signal);
    c.fromGuest.write('[  3.1] boot noise\r\nvmctl: ss');
    await tick();
    c.fromGuest.write('hd re');
    await tick();
    c.fromGuest.write('ady\r\nlogin: ');
    expect(await seen).toBe(true);
    expect(c.aborted()).toBe(1);
  });

  it('is false when the stream ends, the signal aborts, or the console cannot be opened', async () => {
    const a = fakeConsole();
    const ended = scanForMarker(a.stream, 'READY', new AbortController().signal);
    a.fromGuest.write('REA');
    a.fromGuest.end();
    expect(await ended).toBe(false);
    const b = fakeConsole();
    const ac = new AbortController();
    const stopped = scanForMarker(b.stream, 'READY', ac.signal);
    ac.abort();
    expect(await stopped).toBe(false);
    expect(b.aborted()).toBe(1);
    const busy = { openConsole: async () => Promise.reject(new Error('Active console session exists for this domain')) };
    expect(await watchConsoleFor(busy, 'READY', new AbortController().signal)).toBe(false);
    let opened = 0;
    expect(await watchConsoleFor({ openConsole: async () => (opened++, a.stream as never) }, 'READY', AbortSignal.abort())).toBe(false);
    expect(opened).toBe(0);
  });
});
