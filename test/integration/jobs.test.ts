/**
 * Domain and block job wrappers (src/libvirt/objects/jobs.ts) on the main
 * libvirtd: a transient, paused, kernel-less guest with one raw disk (it never
 * runs a CPU instruction), so there is no job — the calls must say so in
 * their typed form.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLBuilder } from 'fast-xml-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, type Domain } from '../../src/libvirt/connection.js';
import { LibvirtError } from '../../src/libvirt/errors.js';
import { VirDomainCreateFlags } from '../../src/libvirt/generated/constants.gen.js';

const name = `tlv-jobs-${process.pid}`;
const disk = join(tmpdir(), `${name}.raw`);
const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', suppressEmptyNode: true });

describe('domain and block jobs (qemu:///system)', () => {
  let conn: Connection;
  let dom: Domain;

  beforeAll(async () => {
    writeFileSync(disk, Buffer.alloc(1 << 20));
    conn = await Connection.open('qemu:///system');
    const xml = builder.build({
      domain: {
        '@_type': 'qemu',
        name,
        memory: { '@_unit': 'MiB', '#text': 32 },
        vcpu: 1,
        os: { type: { '@_arch': 'x86_64', '@_machine': 'pc', '#text': 'hvm' } },
        devices: {
          disk: { '@_type': 'file', '@_device': 'disk', driver: { '@_name': 'qemu', '@_type': 'raw' }, source: { '@_file': disk }, target: { '@_dev': 'vda', '@_bus': 'virtio' } },
          memballoon: { '@_model': 'none' },
        },
      },
    }) as string;
    const F = VirDomainCreateFlags;
    dom = await conn.createTransientDomain(xml, F.VIR_DOMAIN_START_PAUSED | F.VIR_DOMAIN_START_AUTODESTROY);
  });

  afterAll(async () => {
    await dom?.destroy().catch(() => undefined);
    await conn?.close();
    rmSync(disk, { force: true });
  });

  it('jobStats: no current job is type none; no completed job either', async () => {
    const now = await dom.jobStats();
    expect(now.type).toBe('none');
    expect(now.typeCode).toBe(0);
    expect(typeof now.params).toBe('object');
    expect((await dom.jobStats({ completed: true })).type).toBe('none');
  });

  it('abortJob without a job is an operation-invalid LibvirtError', async () => {
    const err = await dom.abortJob().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LibvirtError);
    expect((err as LibvirtError).isOperationInvalid()).toBe(true);
  });

  it('blockJobInfo is null without a block job; abortBlockJob fails; an unknown disk is an error', async () => {
    expect(await dom.blockJobInfo('vda')).toBeNull();
    await expect(dom.abortBlockJob('vda')).rejects.toBeInstanceOf(LibvirtError);
    await expect(dom.blockJobInfo('vdz')).rejects.toBeInstanceOf(LibvirtError);
  });
});
