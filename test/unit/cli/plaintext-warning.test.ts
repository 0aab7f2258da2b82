/**
 * qemu+tcp:// to a host other than loopback warns once per command, naming
 * qemu+tls:// and qemu+ssh://. The address used, 255.255.255.255, is refused
 * by the kernel itself (a TCP connect to a broadcast address fails with
 * ENETUNREACH before any packet is sent), so nothing leaves this machine.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { makeContext, plaintextWarningFor } from '../../../src/cli/context.js';
import { vmctl } from '../../_helpers/vmctl.js';

const REMOTE = 'qemu+tcp://255.255.255.255/system';

describe('plaintextWarningFor', () => {
  it('warns for qemu+tcp:// off loopback only; a bad URI is left to Connection.open', () => {
    expect(plaintextWarningFor(REMOTE)).toMatch(/not encrypted.*qemu\+tls:\/\/255\.255\.255\.255\/system or qemu\+ssh:\/\/USER@255\.255\.255\.255\/system$/);
    expect(plaintextWarningFor('qemu+tcp://127.0.0.1/system')).toBeUndefined();
    expect(plaintextWarningFor('qemu+tls://kvm1/system')).toBeUndefined();
    expect(plaintextWarningFor('qemu+tcp://h/system?no_verify=x')).toBeUndefined();
  });
});

describe('Context.withConnection', () => {
  afterEach(() => vi.restoreAllMocks());

  it('says the warning on stderr once per command, however many connections it opens, before connecting', async () => {
    const writes: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      writes.push(String(chunk));
      return true;
    });
    const ctx = makeContext({ connect: REMOTE, 'log-level': 'silent' });
    for (let i = 0; i < 2; i++) {
      await expect(ctx.withConnection(async () => 'never')).rejects.toMatchObject({ code: 'CONNECT_FAILED', message: expect.stringContaining('ENETUNREACH') as unknown });
    }
    const warnings = writes.filter((w) => w.includes('WARNING'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`vmctl: WARNING: ${REMOTE} is not encrypted: console traffic, volume data`);
  });
});

describe('vmctl with qemu+tcp:// to another host', () => {
  it('warns on stderr (never on stdout) and then fails to connect (exit 5)', async () => {
    const r = await vmctl(['list', '--json', '-c', REMOTE], { timeoutMs: 30_000 });
    expect(r.code).toBe(5);
    expect(r.stderr.match(/WARNING/g)).toHaveLength(1);
    expect(r.stderr).toContain('use qemu+tls://255.255.255.255/system or qemu+ssh://USER@255.255.255.255/system');
    expect((JSON.parse(r.stdout) as { error: { code: string } }).error.code).toBe('CONNECTION');
  });

  it('no warning for loopback tcp (nothing listens on port 1: refused at once)', async () => {
    const r = await vmctl(['list', '-c', 'qemu+tcp://127.0.0.1:1/system'], { timeoutMs: 30_000 });
    expect(r.code).toBe(5);
    expect(r.stderr).not.toContain('WARNING');
    expect(r.stderr).toContain('refused');
  });
});
