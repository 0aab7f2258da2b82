import { describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { lazyLogger, loadPino } from '../../src/libvirt/log.js';

describe('lazyLogger', () => {
  it('makes the real logger only on the first enabled line, and passes lines, levels and children through', () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({ write(chunk: Buffer, _e, cb) { lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>); cb(); } });
    let made = 0;
    const log = lazyLogger('warn', () => {
      made++;
      return loadPino()({ level: 'warn', base: undefined, redact: { paths: ['password'], censor: '[redacted]' } }, sink);
    });
    log.debug('not written');
    log.info({ a: 1 }, 'not written either');
    expect(made).toBe(0);
    expect(log.isLevelEnabled('debug')).toBe(false);
    expect(log.isLevelEnabled('error')).toBe(true);
    const child = log.child({ vm: 'web' });
    child.trace('dropped');
    expect(made).toBe(0);
    log.warn({ password: 'hunter2' }, 'first');
    child.error('second');
    expect(made).toBe(1);
    expect(lines).toMatchObject([
      { level: 40, msg: 'first', password: '[redacted]' },
      { level: 50, msg: 'second', vm: 'web' },
    ]);
  });

  it('silent drops everything without making a logger', () => {
    let made = 0;
    const log = lazyLogger('silent', () => {
      made++;
      return loadPino()({ level: 'silent' });
    });
    log.fatal('x');
    expect(log.isLevelEnabled('fatal')).toBe(false);
    expect(made).toBe(0);
  });
});
