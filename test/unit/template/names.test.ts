import { describe, expect, it } from 'vitest';
import { VmctlError } from '../../../src/core/errors.js';
import {
  assertImageName,
  assertVmName,
  checkBridgeName,
  checkImageName,
  checkTemplateName,
  checkVmName,
  resolveUserPath,
} from '../../../src/core/names.js';

const RULE = "use lowercase letters, digits and '-' (max 63), starting with a letter and not ending with '-'";

describe('VM names', () => {
  it.each([
    ["a'b<c>", `invalid VM name "a'b<c>": ${RULE}`],
    ['../x', `invalid VM name "../x": ${RULE}`],
    ['-rf', `invalid VM name "-rf": ${RULE}`],
    ['', `empty VM name: ${RULE}`],
    ['a'.repeat(64), `invalid VM name "${'a'.repeat(64)}": ${RULE}`],
    ['café', `invalid VM name "café": ${RULE}`],
    ['Web', `invalid VM name "Web": ${RULE}`],
    ['a b', `invalid VM name "a b": ${RULE}`],
    ['a/b', `invalid VM name "a/b": ${RULE}`],
    ['a\nb', `invalid VM name "a\\nb": ${RULE}`],
    ['a"b', `invalid VM name "a\\"b": ${RULE}`],
    ['a&b', `invalid VM name "a&b": ${RULE}`],
    ['web-', `invalid VM name "web-": ${RULE}`],
    ['1web', `invalid VM name "1web": ${RULE}`],
    ['a.b', `invalid VM name "a.b": ${RULE}`],
    ['a_b', `invalid VM name "a_b": ${RULE}`],
  ])('rejects %j with the fix in the message', (name, message) => {
    expect(checkVmName(name)).toBe(message);
    let err: unknown;
    try {
      assertVmName(name);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VmctlError);
    expect((err as VmctlError).code).toBe('INVALID_INPUT');
    expect((err as VmctlError).message).toBe(message);
  });

  it('rejects non-strings', () => {
    expect(checkVmName(42)).toBe('VM name must be a string');
    expect(checkVmName(undefined)).toBe('VM name must be a string');
  });

  it.each(['a', 'web', 'web-1', 'k8s-node-02', 'a'.repeat(63)])('accepts %j', (name) => {
    expect(checkVmName(name)).toBeNull();
    expect(assertVmName(name)).toBe(name);
  });

  it('cuts very long names in messages', () => {
    const msg = checkVmName('x'.repeat(500))!;
    expect(msg.length).toBeLessThan(300);
    expect(msg).toContain('…');
  });
});

describe('other names', () => {
  it('image names', () => {
    for (const ok of ['debian-12', 'alpine-3.19.qcow2', 'ubuntu_22.04', 'Fedora+x']) expect(checkImageName(ok)).toBeNull();
    for (const bad of ['', '..', '.hidden', '../etc/passwd', 'a/b', 'a b', "a'b", '-x', 'a<b>', 'é']) {
      expect(checkImageName(bad)).not.toBeNull();
    }
    expect(() => assertImageName('../x')).toThrow(
      `invalid image name "../x": use letters, digits, '.', '_', '+' and '-' (max 128), starting with a letter or digit`,
    );
  });

  it('template names', () => {
    for (const ok of ['default', 'desktop-lab', 'k8s_node.v2']) expect(checkTemplateName(ok)).toBeNull();
    for (const bad of ['', '..', '../x', 'a/b', 'Big', '.x', 'a b']) expect(checkTemplateName(bad)).not.toBeNull();
  });

  it('bridge names are Linux interface names', () => {
    expect(checkBridgeName('br0')).toBeNull();
    expect(checkBridgeName('virbr0-nic.100')).toBeNull();
    expect(checkBridgeName('a'.repeat(16))).not.toBeNull();
    expect(checkBridgeName('br 0')).not.toBeNull();
    expect(checkBridgeName('br/0')).not.toBeNull();
  });
});

describe('user paths', () => {
  it('resolves relative paths against the base', () => {
    expect(resolveUserPath('keys/id.pub', { base: '/home/u' })).toBe('/home/u/keys/id.pub');
    expect(resolveUserPath('/abs/file', { base: '/home/u' })).toBe('/abs/file');
  });

  it('rejects escaping the root with ..', () => {
    expect(() => resolveUserPath('../../etc/shadow', { base: '/srv/vm', root: '/srv/vm', label: 'kernel' })).toThrow(
      'invalid kernel "../../etc/shadow": must stay inside /srv/vm',
    );
    expect(() => resolveUserPath('/etc/shadow', { root: '/srv/vm' })).toThrow('must stay inside /srv/vm');
    expect(() => resolveUserPath('/srv/vmx/a', { root: '/srv/vm' })).toThrow('must stay inside /srv/vm');
    expect(resolveUserPath('a/../b', { base: '/srv/vm', root: '/srv/vm' })).toBe('/srv/vm/b');
    expect(resolveUserPath('/srv/vm', { root: '/srv/vm' })).toBe('/srv/vm');
  });

  it('rejects NUL bytes, control characters, empty and relative-when-absolute-required', () => {
    expect(() => resolveUserPath('a\0b', { label: '--ssh-key' })).toThrow('invalid --ssh-key "a\\u0000b": contains a NUL byte');
    expect(() => resolveUserPath('a\nb')).toThrow('contains control characters');
    expect(() => resolveUserPath('')).toThrow('empty path: give a file path');
    expect(() => resolveUserPath('vmlinuz', { mustBeAbsolute: true, label: 'kernel' })).toThrow(
      'invalid kernel "vmlinuz": must be an absolute path',
    );
    try {
      resolveUserPath('\0');
    } catch (e) {
      expect((e as VmctlError).code).toBe('INVALID_INPUT');
    }
  });

  it('keeps quotes and <>& (they are legal in file names; XML escaping handles them)', () => {
    expect(resolveUserPath(`/tmp/a'b"<c>&.iso`)).toBe(`/tmp/a'b"<c>&.iso`);
  });
});
