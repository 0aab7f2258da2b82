/** qemu:///system over the real libvirtd UNIX socket (scripts/libvirtd.sh start). */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { connectTransport } from '../../src/libvirt/transport/index.js';
import { parseLibvirtUri } from '../../src/libvirt/uri.js';
import { authList, REMOTE_PROC_AUTH_LIST, REMOTE_PROGRAM } from '../_helpers/raw-rpc.js';

describe('unix transport (real libvirtd)', () => {
  it('qemu:///system reaches the daemon and gets an AUTH_LIST reply', async () => {
    expect(existsSync('/run/libvirt/libvirt-sock') || existsSync('/run/libvirt/virtqemud-sock'), 'no libvirt daemon socket: scripts/libvirtd.sh start').toBe(true);
    const t = await connectTransport(parseLibvirtUri('qemu:///system'));
    try {
      expect(t.description).toMatch(/^unix:\/run\/libvirt\/(libvirt|virtqemud)-sock$/);
      expect(await authList(t.stream)).toMatchObject({ program: REMOTE_PROGRAM, version: 1, procedure: REMOTE_PROC_AUTH_LIST, type: 1, serial: 1, status: 0 });
    } finally {
      t.close();
    }
  });

  it('the read-only socket works too', async () => {
    const t = await connectTransport(parseLibvirtUri('qemu:///system'), { readOnly: true });
    try {
      expect(t.description).toMatch(/-sock-ro$/);
      expect(await authList(t.stream)).toMatchObject({ type: 1, status: 0 });
    } finally {
      t.close();
    }
  });
});
