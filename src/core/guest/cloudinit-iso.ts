/**
 * cloud-init for vmctl guests, part 3: the NoCloud seed ISO (genisoimage or
 * xorriso), written privately (0600: it holds the host private key) and atomically.
 */
import { execFile } from 'node:child_process';
import { accessSync, chmodSync, constants as fsConstants, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, delimiter, dirname, join } from 'node:path';
import { VmctlError } from '../errors.js';
import { EARLY_DIR } from './cloudinit-early.js';
import type { SeedDocuments } from './cloudinit-seed.js';

/** NoCloud volume label */
export const SEED_LABEL = 'cidata';

export type IsoTool = 'genisoimage' | 'xorriso';

const ISO_PACKAGES: Record<IsoTool, string> = { genisoimage: 'genisoimage', xorriso: 'xorriso' };

/** Absolute path of an executable on PATH, or undefined. */
export function findExecutable(name: string, pathEnv: string = process.env.PATH ?? ''): string | undefined {
  for (const dir of pathEnv.split(delimiter)) {
    if (dir === '') continue;
    const p = join(dir, name);
    try {
      accessSync(p, fsConstants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A host path in a mkisofs graft point: '\\' and '=' are escaped with a backslash. */
function graftPath(p: string): string {
  return p.replace(/[\\=]/g, (c) => `\\${c}`);
}

export interface WriteSeedIsoOptions {
  /** force one tool (default: genisoimage, else xorriso) */
  readonly tool?: IsoTool;
  /** PATH to search (default process.env.PATH) */
  readonly pathEnv?: string;
  /** mode of the ISO (default 0600: it holds the host private key) */
  readonly mode?: number;
}

function run(file: string, args: string[]): Promise<{ stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { maxBuffer: 4 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } }, (err, _stdout, stderr) => {
      if (err) reject(Object.assign(err, { stderr: String(stderr) }));
      else resolve({ stderr: String(stderr) });
    });
  });
}

/**
 * Write a NoCloud seed ISO (volume label "cidata"; files user-data, meta-data,
 * network-config, and the early files in vmctl/; Rock Ridge + Joliet names) to
 * outFile, via a temp name in the same directory and a rename. Nothing is left
 * behind on failure.
 */
export async function writeSeedIso(
  docs: SeedDocuments,
  outFile: string,
  opts: WriteSeedIsoOptions = {},
): Promise<{ path: string; tool: IsoTool }> {
  const candidates: IsoTool[] = opts.tool ? [opts.tool] : ['genisoimage', 'xorriso'];
  let tool: IsoTool | undefined;
  let bin: string | undefined;
  for (const t of candidates) {
    bin = findExecutable(t, opts.pathEnv);
    if (bin) {
      tool = t;
      break;
    }
  }
  if (!tool || !bin) {
    const pkg = opts.tool ? ISO_PACKAGES[opts.tool] : 'genisoimage';
    throw new VmctlError('UNSUPPORTED', `cannot build the cloud-init seed ISO: ${candidates.join(' or ')} not found on PATH`, {
      hint: `install it: apt-get install ${pkg}`,
    });
  }

  const outDir = dirname(outFile);
  if (!existsSync(outDir)) mkdirSync(outDir, { recursive: true, mode: 0o700 });
  // a private work dir next to the target: same filesystem for the rename, never world-readable
  const work = mkdtempSync(join(outDir, `.${basename(outFile)}.`));
  try {
    chmodSync(work, 0o700);
    const files = [
      ['user-data', docs.userData],
      ['meta-data', docs.metaData],
      ['network-config', docs.networkConfig],
    ] as const;
    // graft points NAME=PATH: the names on the ISO are exactly these
    const grafts = files.map(([name, text]) => {
      const p = join(work, name);
      writeFileSync(p, text, { mode: 0o600 });
      return `${name}=${graftPath(p)}`;
    });
    if (docs.earlyFiles.length > 0) {
      const early = join(work, EARLY_DIR);
      mkdirSync(early, { mode: 0o700 });
      for (const f of docs.earlyFiles) {
        if (!/^[A-Za-z0-9._-]+$/.test(f.name) || f.name.startsWith('.')) throw new VmctlError('INTERNAL', `bad early seed file name ${f.name}`);
        writeFileSync(join(early, f.name), f.content, { mode: f.mode });
      }
      grafts.push(`${EARLY_DIR}/=${graftPath(early)}`);
    }
    const iso = join(work, 'seed.iso');
    const common = ['-V', SEED_LABEL, '-J', '-r', '-graft-points', '-o', iso, ...grafts];
    const args = tool === 'genisoimage' ? ['-quiet', '-input-charset', 'utf-8', ...common] : ['-as', 'mkisofs', '-quiet', ...common];
    try {
      await run(bin, args);
    } catch (err) {
      const stderr = ((err as { stderr?: string }).stderr ?? '').trim();
      const tail = stderr.split('\n').slice(-3).join(' / ');
      const code = /no space left/i.test(stderr) ? 'RESOURCE' : 'INTERNAL';
      throw new VmctlError(code, `${tool} failed to write the seed ISO${tail ? `: ${tail}` : ''}`, {
        cause: err,
        ...(code === 'RESOURCE' ? { hint: `free some space in ${outDir}` } : {}),
      });
    }
    chmodSync(iso, opts.mode ?? 0o600);
    renameSync(iso, outFile);
    return { path: outFile, tool };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
