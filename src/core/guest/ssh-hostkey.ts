/**
 * Host key policy for guests: strict pinning, no trust on first use. vmctl
 * injected the guest's host key through cloud-init and pinned its public half
 * in the VM's known_hosts (cloudinit-keys.ts pinHostKey), so anything else is
 * refused (VmctlError HOST_KEY); @revoked entries are honoured and the pinned
 * key types are offered first in the key exchange.
 */
import type { ServerHostKeyAlgorithm } from 'ssh2';
import {
  entryMatchesName,
  fingerprintSha256,
  keyTypeOfBlob,
  preferredHostKeyAlgorithmsForName,
  type KnownHostEntry,
} from '../../libvirt/transport/known-hosts.js';
import { SUPPORTED_HOST_KEY_ALGORITHMS } from '../../libvirt/transport/ssh.js';
import type { VmctlError } from '../errors.js';
import { sshError } from './ssh-errors.js';

export interface PinCheck {
  readonly ok: boolean;
  readonly error?: VmctlError;
  readonly type: string;
  readonly fingerprint: string;
}

/** Strict check of a presented host key blob against the entries pinned for `pattern`. */
export function checkPinnedHostKey(entries: readonly KnownHostEntry[], pattern: string, key: Buffer, file: string): PinCheck {
  const name = pattern.toLowerCase();
  const type = keyTypeOfBlob(key) ?? 'unknown-key-type';
  const fingerprint = fingerprintSha256(key);
  const forHost = entries.filter((e) => e.marker !== 'cert-authority' && entryMatchesName(e, name));
  const details = { hostPattern: name, knownHostsFile: file, presented: `${type} ${fingerprint}` };
  if (forHost.some((e) => e.marker === 'revoked' && e.key.equals(key))) {
    return {
      ok: false,
      type,
      fingerprint,
      error: sshError('HOST_KEY', 'host-key', `host key ${type} ${fingerprint} of ${name} is marked @revoked in ${file}`, {
        hint: 'refusing to connect',
        details,
      }),
    };
  }
  const pinned = forHost.filter((e) => e.marker === undefined);
  if (pinned.some((e) => e.key.equals(key))) return { ok: true, type, fingerprint };
  if (pinned.length === 0) {
    return {
      ok: false,
      type,
      fingerprint,
      error: sshError('HOST_KEY', 'host-key', `no host key pinned for ${name} in ${file} (the server presents ${type} ${fingerprint})`, {
        hint: 'vmctl pins the guest host key it injects when it creates the VM; vmctl never trusts a key on first use',
        details,
      }),
    };
  }
  const expected = pinned.map((e) => `${e.keyType} ${fingerprintSha256(e.key)}`).join(', ');
  return {
    ok: false,
    type,
    fingerprint,
    error: sshError(
      'HOST_KEY',
      'host-key',
      `HOST KEY MISMATCH for ${name}: the server presents ${type} ${fingerprint}, but ${file} pins ${expected}`,
      {
        hint: 'something other than the guest may be answering on this address, or the guest did not get the host key vmctl injected; refusing to connect',
        details: { ...details, pinned: expected },
      },
    ),
  };
}

/** The server host key algorithms to offer: those of the pinned keys first, then the rest. */
export function hostKeyAlgorithms(entries: readonly KnownHostEntry[], pattern: string): ServerHostKeyAlgorithm[] {
  return preferredHostKeyAlgorithmsForName(entries, pattern, SUPPORTED_HOST_KEY_ALGORITHMS);
}
