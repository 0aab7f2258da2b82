/**
 * The types shared by the image modules (./images.ts is the entry point), and
 * the images vmctl can build.
 */
import type { Logger } from 'pino';
import type { ImageVolumeKind, VolumeFormat } from '../storage/volume.js';

export type ImageFormat = VolumeFormat;
export type { ImageVolumeKind };

/** Images `vmctl image build` knows how to make (scripts/build-image.sh). */
export const BUILDABLE_IMAGES = ['debian-12'] as const;
export type BuildableImage = (typeof BUILDABLE_IMAGES)[number];
export const DEFAULT_IMAGE: BuildableImage = 'debian-12';

export function isBuildableImage(name: string): name is BuildableImage {
  return (BUILDABLE_IMAGES as readonly string[]).includes(name);
}

export type ImageBoot = { method: 'direct-kernel'; kernelPath: string; initrdPath: string; cmdline: string } | { method: 'bootloader' };

/** What vmctl records about an import (the `vmctlImport` key of the stored manifest). */
export interface ImportRecord {
  name: string;
  /** file path, or URL without credentials / query */
  source: string;
  importedAt: string;
  format: ImageFormat;
  sha256: string;
  fileSize: number;
  virtualSize: number;
  volumes: { disk: string; kernel?: string; initrd?: string; manifest: string };
  kernelSha256?: string;
  initrdSha256?: string;
}

export type ManifestBoot =
  | { method: 'direct-kernel'; kernel: string; initrd: string; cmdline: string; kernelSha256?: string; initrdSha256?: string; [k: string]: unknown }
  | { method: 'bootloader'; [k: string]: unknown };

/** A build manifest (scripts/build-image.sh), as stored with the image. Unknown keys are kept. */
export interface ImageManifest {
  manifestVersion: 1;
  name?: string;
  format: ImageFormat;
  virtualSize?: number;
  fileSize?: number;
  sha256?: string;
  boot: ManifestBoot;
  vmctlImport?: ImportRecord;
  [k: string]: unknown;
}

export interface ImageInfo {
  name: string;
  format: ImageFormat;
  /** length of the disk volume's file: the bytes an upload/download moves */
  sizeBytes: number;
  /** host disk space the disk volume uses */
  allocationBytes: number;
  /** the disk size a guest sees */
  virtualSizeBytes: number;
  /** disk volume path on the host */
  path: string;
  pool: string;
  volumes: { disk: string; kernel?: string; initrd?: string; manifest?: string };
  boot: ImageBoot;
  /** the stored manifest (without `vmctlImport`); null when there is none */
  manifest: ImageManifest | null;
  imported: ImportRecord | null;
  /** every volume the manifest promises is there (an import still running or interrupted: false) */
  complete: boolean;
  /** volumes in the pool whose backing store is this image (VM overlays) */
  inUseBy: string[];
  /** domains that reference the image's disk, kernel or initrd directly */
  usedByDomains: string[];
}

export type TransferPhase = 'download' | 'verify' | 'upload';

/**
 * Progress events. `done`/`total` are bytes for transfers (download of a URL,
 * verify = hashing local files, upload = all volumes of the image together)
 * and percent for builds; `total` is absent when unknown.
 */
export type ImageProgress =
  | { phase: 'build'; image: string; done: number; total: 100; message: string }
  | {
      phase: TransferPhase;
      image: string;
      /** what is being transferred right now */
      item: ImageVolumeKind;
      done: number;
      total?: number;
      bytesPerSecond: number;
      etaSeconds: number | null;
      /** last event of this phase */
      finished: boolean;
    };

export interface ImageOpOptions {
  onProgress?: (p: ImageProgress) => void;
  /** human-readable notes (what is happening, rollback results, build output) */
  onLog?: (message: string) => void;
  /** alternatively, a logger for those notes (level info) */
  log?: Logger;
  /** abort: stops transfers/builds and rolls back */
  signal?: AbortSignal;
}

export interface ImportImageOptions extends ImageOpOptions {
  /** a file path, a file:// URL or an http(s):// URL */
  source: string;
  name: string;
  /** expected sha256 of the disk file (hex) */
  sha256?: string;
  /** replace an existing image of that name (never one that is in use) */
  force?: boolean;
}

/** Build profiles of scripts/build-image.sh: tuned (fast boot, the default) or stock (Debian's defaults, the baseline). */
export const BUILD_PROFILES = ['tuned', 'stock'] as const;
export type BuildProfile = (typeof BUILD_PROFILES)[number];

export interface BuildImageOptions extends ImageOpOptions {
  force?: boolean;
  /** default 'tuned'; 'stock' builds and imports NAME-stock */
  profile?: BuildProfile;
  /** the build script (default: the package's scripts/build-image.sh); for tests */
  script?: string;
}

export type LogOptions = Pick<ImageOpOptions, 'onLog' | 'log'>;

export function logFn(opts: LogOptions): ((m: string) => void) | undefined {
  if (opts.onLog) return opts.onLog;
  const log = opts.log;
  return log ? (m) => log.info(m) : undefined;
}
