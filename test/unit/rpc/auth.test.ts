import { describe, expect, it } from 'vitest';
import { SASL_UNSUPPORTED_MESSAGE, authenticate, openConnection } from '../../../src/libvirt/rpc/auth.js';
import { LibvirtError } from '../../../src/libvirt/errors.js';
import { AuthType, VirErrorNumber } from '../../../src/libvirt/rpc/protocol.js';

function fakeRemote(types: AuthType[] | LibvirtError, polkit: LibvirtError | null = null) {
  const calls: string[] = [];
  return {
    calls,
    authList: async () => {
      calls.push('authList');
      if (types instanceof LibvirtError) throw types;
      return { types };
    },
    authPolkit: async () => {
      calls.push('authPolkit');
      if (polkit) throw polkit;
      return { complete: 1 };
    },
    connectOpen: async (args: { name: string | null; flags: number }) => {
      calls.push(`connectOpen ${args.name} ${args.flags}`);
    },
  };
}

describe('authenticate', () => {
  it('accepts an empty list and "none" without further calls', async () => {
    for (const types of [[], [AuthType.REMOTE_AUTH_NONE]]) {
      const r = fakeRemote(types);
      await authenticate(r);
      expect(r.calls).toEqual(['authList']);
    }
  });

  it('completes polkit with AUTH_POLKIT', async () => {
    const r = fakeRemote([AuthType.REMOTE_AUTH_POLKIT]);
    await authenticate(r);
    expect(r.calls).toEqual(['authList', 'authPolkit']);
  });

  it('prefers polkit when SASL is also offered', async () => {
    const r = fakeRemote([AuthType.REMOTE_AUTH_SASL, AuthType.REMOTE_AUTH_POLKIT]);
    await authenticate(r);
    expect(r.calls).toEqual(['authList', 'authPolkit']);
  });

  it('refuses SASL-only daemons with a clear, actionable error', async () => {
    const r = fakeRemote([AuthType.REMOTE_AUTH_SASL]);
    const err = (await authenticate(r).catch((e: unknown) => e)) as LibvirtError;
    expect(err).toBeInstanceOf(LibvirtError);
    expect(err.kind).toBe('auth');
    expect(err.message).toBe(SASL_UNSUPPORTED_MESSAGE);
    expect(err.message).toBe(
      'the libvirt daemon requires SASL authentication, which vmctl does not support; set auth_unix_rw/auth_tcp to "none" or "polkit" in libvirtd.conf, or use qemu+ssh://',
    );
    expect(r.calls).toEqual(['authList']);
  });

  it('reports a polkit denial as an auth error, keeping the daemon code', async () => {
    const denied = new LibvirtError('authentication failed: access denied by policy', {
      kind: 'remote',
      code: VirErrorNumber.VIR_ERR_AUTH_FAILED,
    });
    const err = (await authenticate(fakeRemote([AuthType.REMOTE_AUTH_POLKIT], denied)).catch(
      (e: unknown) => e,
    )) as LibvirtError;
    expect(err.kind).toBe('auth');
    expect(err.code).toBe(VirErrorNumber.VIR_ERR_AUTH_FAILED);
    expect(err.message).toMatch(/polkit authentication .* access denied by policy/);
  });

  it('tolerates daemons without AUTH_LIST (VIR_ERR_NO_SUPPORT) and rethrows anything else', async () => {
    const noSupport = new LibvirtError('unknown procedure', { kind: 'remote', code: VirErrorNumber.VIR_ERR_NO_SUPPORT });
    await expect(authenticate(fakeRemote(noSupport))).resolves.toBeUndefined();
    const lost = LibvirtError.transport('connection closed');
    await expect(authenticate(fakeRemote(lost))).rejects.toBe(lost);
  });

  it('rejects unknown schemes', async () => {
    await expect(authenticate(fakeRemote([77 as AuthType]))).rejects.toMatchObject({ kind: 'auth' });
  });
});

describe('openConnection', () => {
  it('sends CONNECT_OPEN with the name and flags', async () => {
    const r = fakeRemote([]);
    await openConnection(r, 'qemu:///system', 1);
    expect(r.calls).toEqual(['connectOpen qemu:///system 1']);
  });
});

describe('LibvirtError helpers', () => {
  const remote = (code: number, message = 'x') => new LibvirtError(message, { kind: 'remote', code });
  it('classifies not-found codes', () => {
    for (const code of [42, 43, 49, 50, 53, 57, 62, 66, 72, 101, 103, 104, 107]) expect(remote(code).isNotFound()).toBe(true);
    expect(remote(1).isNotFound()).toBe(false);
    expect(LibvirtError.transport('x').isNotFound()).toBe(false);
  });
  it('classifies already-exists, by code and by the drivers\' messages', () => {
    for (const code of [28, 37, 90, 106]) expect(remote(code).isAlreadyExists()).toBe(true);
    expect(remote(9, "operation failed: domain 'a' already exists with uuid 1234").isAlreadyExists()).toBe(true);
    expect(remote(9, "operation failed: pool 'p' is already defined with uuid 1").isAlreadyExists()).toBe(true);
    expect(remote(9, 'operation failed: something else').isAlreadyExists()).toBe(false);
  });
  it('classifies operation-invalid and connection loss', () => {
    expect(remote(55).isOperationInvalid()).toBe(true);
    expect(LibvirtError.protocol('x').isConnectionLost()).toBe(true);
    expect(LibvirtError.transport('x').isConnectionLost()).toBe(true);
    expect(remote(38).isConnectionLost()).toBe(false);
    expect(new LibvirtError('t', { kind: 'timeout' }).isConnectionLost()).toBe(false);
  });
});
