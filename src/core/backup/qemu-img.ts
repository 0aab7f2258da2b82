/** Local qemu-img, run asynchronously (a blocked event loop would miss libvirt's keepalives). */
import { execFile } from 'node:child_process';
import { VmctlError } from '../errors.js';

export function qemuImg(args: string[], signal?: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('qemu-img', args, { maxBuffer: 256 * 1024 * 1024, ...(signal ? { signal } : {}) }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') return reject(new VmctlError('UNSUPPORTED', 'qemu-img is not installed on this machine', { hint: 'apt-get install qemu-utils' }));
      if (/No space left on device/i.test(stderr)) {
        return reject(new VmctlError('RESOURCE', `qemu-img ${args[0]}: no space left on device`, { hint: 'free space where the backup set and $TMPDIR are, then retry' }));
      }
      reject(new VmctlError('INTERNAL', `qemu-img ${args.join(' ')} failed: ${stderr.trim() || e.message}`, { cause: err }));
    });
  });
}

export interface MapExtent {
  start: number;
  length: number;
  depth: number;
  present?: boolean;
  zero: boolean;
  data: boolean;
  /** where the extent's data is in the image file (uncompressed data only) */
  offset?: number;
}

/** qemu-img map of an image (its whole backing chain). */
export async function imageMap(path: string, format: string, signal?: AbortSignal): Promise<MapExtent[]> {
  return JSON.parse(await qemuImg(['map', '--output=json', '-f', format, path], signal)) as MapExtent[];
}

export async function imageInfo(path: string, signal?: AbortSignal): Promise<{ 'virtual-size': number; format: string; 'actual-size'?: number }> {
  return JSON.parse(await qemuImg(['info', '--output=json', path], signal)) as { 'virtual-size': number; format: string };
}
