/** Addresses read over ssh when sshd answers before the guest agent (readiness.ts). */
import { describe, expect, it } from 'vitest';
import { parseIpAddrLines } from '../../src/core/vm/readiness.js';

describe('parseIpAddrLines', () => {
  it('takes global addresses from `ip -o addr show scope global`, IPv4 first', () => {
    const text = [
      '2: eth0    inet6 fec0::5054:ff:fe12:3456/64 scope site dynamic mngtmpaddr noprefixroute \\       valid_lft 86365sec preferred_lft 14365sec',
      '2: eth0    inet 10.0.2.15/24 metric 1024 brd 10.0.2.255 scope global dynamic eth0\\       valid_lft 86365sec preferred_lft 86365sec',
      '3: eth1    inet 192.168.122.7/24 brd 192.168.122.255 scope global eth1\\       valid_lft forever preferred_lft forever',
      '',
    ].join('\n');
    expect(parseIpAddrLines(text)).toEqual(['10.0.2.15', '192.168.122.7', 'fec0::5054:ff:fe12:3456']);
    expect(parseIpAddrLines('')).toEqual([]);
  });
});
