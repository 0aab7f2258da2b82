/**
 * Base images: volumes in vmctl's storage pool (src/core/storage/pool.ts), so a
 * remote host works exactly like the local one — every byte travels through
 * libvirt volume streams (upload/download), never through a shared filesystem.
 * Their volume names (img_NAME.qcow2|raw, .vmlinuz, .initrd, .manifest.json,
 * the manifest written last) come from src/core/storage/volume.ts.
 *
 * This file is the entry point (ensureImage, and everything the CLI and the VM
 * lifecycle use); the work is done in:
 *
 *   types.ts     shared types, the buildable images
 *   inspect.ts   format detection, build manifests, files a domain references
 *   progress.ts  byte meters (rate, ETA), hashing on the way, aborts
 *   source.ts    import sources: a local file, or a URL downloaded to a private temp dir
 *   catalog.ts   scanning the pool into images, usage, list/get/find, rm
 *   import.ts    uploading a source into the pool through volume streams
 *   build.ts     running scripts/build-image.sh into the build cache
 *
 * Every image gets a manifest: the build manifest of scripts/build-image.sh when
 * the source had one (`FILE.json` next to the file, or `URL.json`), else a
 * synthesized one (`boot.method: 'bootloader'`); in both cases with a
 * `vmctlImport` record (source, date, sha256s, volume names) added.
 *
 * Imports roll back every volume they created on any failure or abort; an
 * existing image is only replaced with `force`, and never while it is in use.
 */
import { existsSync } from 'node:fs';
import type { Connection } from '../../libvirt/connection.js';
import { VmctlError } from '../errors.js';
import { assertImageName, quote } from '../names.js';
import { builtImagePath } from '../paths.js';
import { buildImageFiles } from './build.js';
import { findImage, notFound } from './catalog.js';
import { importImage } from './import.js';
import { isBuildableImage, logFn, type ImageInfo, type ImageOpOptions } from './types.js';

export * from './types.js';
export { buildImage, buildImageFiles, buildPlan, buildScriptPath, parseBuildLine, type BuildPlan } from './build.js';
export { findImage, getImage, listImages, readSmallVolume, removeImage } from './catalog.js';
export { importImage } from './import.js';
export { domainFileReferences, inspectImageHeader, normalizeSha256, parseBuildManifest, type HeaderInspection } from './inspect.js';
export { IMAGE_VOLUME_PREFIX, imageVolumeNames, parseImageVolumeName, parseVolumeXml, type ImageVolumeNames, type VolumeDetails } from '../storage/volume.js';

/**
 * The image, making it available first when needed (what `vmctl create` uses):
 * in the pool → returned as is; in the local build cache → imported (uploaded
 * through a volume stream, which is how the default image reaches a remote
 * host); buildable → built, then imported.
 */
export async function ensureImage(conn: Connection, name: string, options: ImageOpOptions = {}): Promise<ImageInfo> {
  assertImageName(name);
  const onLog = logFn(options);
  const opts: ImageOpOptions = { ...options, ...(onLog ? { onLog } : {}) };
  const present = await findImage(conn, name);
  if (present) {
    if (present.complete) return present;
    throw new VmctlError('CONFLICT', `image ${quote(name)} is incomplete: an import is running or was interrupted`, {
      hint: `wait for the other import, or remove the leftovers and retry: vmctl image rm ${name}`,
      details: { volumes: present.volumes },
    });
  }
  const cached = builtImagePath(name);
  if (existsSync(`${cached}.json`) && existsSync(cached)) {
    opts.onLog?.(`importing image ${name} from the build cache ${cached}`);
    return importImage(conn, { ...opts, source: cached, name });
  }
  if (isBuildableImage(name)) {
    opts.onLog?.(`image ${name} is neither in the pool nor in the build cache: building it`);
    await buildImageFiles(name, opts);
    return importImage(conn, { ...opts, source: cached, name });
  }
  throw notFound(conn, name);
}
