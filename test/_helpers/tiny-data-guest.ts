/**
 * The tiny guest with a 4 GiB qcow2 data disk (vda) holding some data, defined and started in
 * pool vmctl of the daemon `virsh` talks to: kernel and initrd as pool volumes `TAG-k.*` (QEMU
 * cannot read the repo's cache), the disk as volume `TAG-data.qcow2`. For backup tests.
 */
import { execFileSync } from 'node:child_process';
import { rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './rig.js';
import { tinyDomainXml } from './tiny-domain.js';

export interface TinyDataGuest {
  /** the pool's directory on the daemon's side */
  poolPath: string;
  /** the data disk's file there */
  dataFile: string;
}

/** `writes`: qemu-io commands that put the data on the disk first (e.g. 'write -P 0x11 0 100M'). */
export function defineTinyDataGuest(virsh: (...args: string[]) => string, o: { tag: string; vm: string; work: string; writes: string[] }): TinyDataGuest {
  const poolPath = /<path>([^<]+)<\/path>/.exec(virsh('pool-dumpxml', 'vmctl'))![1]!;
  const tiny = process.env.VMCTL_TINY_DIR ?? join(repoRoot, '.cache', 'tiny'); // scripts/build-tiny-guest.sh's default
  for (const [f, v] of [['vmlinuz', `${o.tag}-k.vmlinuz`], ['initrd.img', `${o.tag}-k.initrd`]] as const) {
    virsh('vol-create-as', 'vmctl', v, String(statSync(join(tiny, f)).size), '--format', 'raw');
    virsh('vol-upload', v, join(tiny, f), '--pool', 'vmctl');
  }
  const disk = join(o.work, 'disk.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=1.1', disk, '4G']);
  execFileSync('qemu-io', ['-f', 'qcow2', ...o.writes.flatMap((w) => ['-c', w]), disk], { stdio: 'ignore' });
  const vol = `${o.tag}-data.qcow2`;
  writeFileSync(join(o.work, 'vol.xml'), `<volume><name>${vol}</name><capacity>${4 * 1024 * 1024 * 1024}</capacity><allocation>0</allocation><target><format type='qcow2'/><compat>1.1</compat><permissions><mode>0600</mode></permissions></target></volume>`);
  virsh('vol-create', 'vmctl', join(o.work, 'vol.xml'));
  virsh('vol-upload', vol, disk, '--pool', 'vmctl');
  rmSync(disk);
  const dataFile = join(poolPath, vol);
  const xml = tinyDomainXml({ name: o.vm, kernel: join(poolPath, `${o.tag}-k.vmlinuz`), initrd: join(poolPath, `${o.tag}-k.initrd`) }).replace(
    '<devices>',
    `<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${dataFile}'/><target dev='vda' bus='virtio'/></disk>`,
  );
  writeFileSync(join(o.work, 'dom.xml'), xml);
  virsh('define', join(o.work, 'dom.xml'));
  virsh('start', o.vm);
  return { poolPath, dataFile };
}
