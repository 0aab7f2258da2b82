/** `vmctl image …`: base images in vmctl's storage pool (src/core/images.ts). */
import type { Argv, CommandModule } from 'yargs';
import { makeContext, type GlobalArgs } from '../context.js';
import { withOp } from '../op.js';
import { BUILD_PROFILES, DEFAULT_IMAGE, type BuildProfile } from '../../core/image/types.js';
import type { ImageInfo, ImageProgress } from '../../core/image/images.js';

// the image core (fast-xml-parser, streams, the build runner) loads only when an image command runs
const core = () => import('../../core/image/images.js');
import type { Connection } from '../../libvirt/connection.js';
import { formatBytes, formatTable } from '../render.js';

type Cmd<A> = CommandModule<GlobalArgs, GlobalArgs & A>;

function bootText(i: ImageInfo): string {
  return i.boot.method === 'direct-kernel' ? 'kernel' : 'disk';
}

function usedText(i: ImageInfo): string {
  const all = [...i.inUseBy, ...i.usedByDomains.map((d) => `vm:${d}`)];
  if (all.length === 0) return i.complete ? '-' : '(incomplete)';
  return all.length > 3 ? `${all.slice(0, 3).join(',')},+${all.length - 3}` : all.join(',');
}

function summary(i: ImageInfo): string {
  return `${i.name} (${i.format}, ${formatBytes(i.sizeBytes)}, virtual ${formatBytes(i.virtualSizeBytes)}, ${
    i.boot.method === 'direct-kernel' ? 'direct kernel boot' : 'boots from its disk'
  })`;
}

type JobHooks = { signal: AbortSignal; onProgress: (p: ImageProgress) => void; onLog: (m: string) => void };

/** import/build: a long job with progress that Ctrl-C rolls back; prints `<verb> image <summary>` or the JSON. */
async function runImageJob(argv: GlobalArgs, kind: string, verb: string, job: (conn: Connection, hooks: JobHooks) => Promise<ImageInfo>): Promise<void> {
  await withOp(argv, kind, async ({ op, ctx, quiet }) => {
    const info = await job(op.conn, { signal: op.signal, onProgress: (p) => op.progress(p), onLog: (m) => op.log.info(m) });
    quiet();
    if (ctx.json) return ctx.out.json(info);
    ctx.out.line(`${verb} image ${summary(info)}`);
  });
}

interface ImportArgs {
  source: string;
  name: string;
  sha256?: string;
  force: boolean;
}

const importCommand: Cmd<ImportArgs> = {
  command: 'import <source>',
  describe: 'import a qcow2/raw disk image (file or http(s) URL; FILE.json next to it brings kernel/initrd along)',
  builder: (y) =>
    y
      .positional('source', { type: 'string', demandOption: true, describe: 'image file or http(s) URL' })
      .option('name', { alias: 'n', type: 'string', demandOption: true, requiresArg: true, describe: 'image name' })
      .option('sha256', { type: 'string', requiresArg: true, describe: 'expected sha256 of the image file; a mismatch imports nothing' })
      .option('force', { alias: 'f', type: 'boolean', default: false, describe: 'replace an existing image of that name (never one in use)' }) as never,
  handler: (argv) =>
    runImageJob(argv, 'image-import', 'imported', (conn, hooks) =>
      core().then((c) => c.importImage(conn, { source: argv.source, name: argv.name, ...(argv.sha256 !== undefined ? { sha256: argv.sha256 } : {}), force: argv.force, ...hooks })),
    ),
};

const listCommand: Cmd<object> = {
  command: 'list',
  aliases: ['ls'],
  describe: 'list images in vmctl\'s storage pool',
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { listImages } = await core();
    const images = await ctx.withConnection((conn) => listImages(conn, { onLog: (m) => ctx.log.warn(m) }));
    if (ctx.json) return ctx.out.json(images);
    if (images.length === 0) {
      ctx.out.line(`no images (vmctl image build ${DEFAULT_IMAGE}, or vmctl image import FILE|URL --name NAME)`);
      return;
    }
    ctx.out.line(
      formatTable(
        ['NAME', 'FORMAT', 'SIZE', 'VIRTUAL', 'BOOT', 'USED BY'],
        images.map((i) => [i.name, i.format, formatBytes(i.sizeBytes), formatBytes(i.virtualSizeBytes), bootText(i), usedText(i)]),
      ),
    );
  },
};

const rmCommand: Cmd<{ name: string }> = {
  command: 'rm <name>',
  aliases: ['remove', 'delete'],
  describe: 'remove an image (refused while VM disks are based on it)',
  builder: (y) => y.positional('name', { type: 'string', demandOption: true, describe: 'image name' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const { removeImage } = await core();
    const r = await ctx.withConnection((conn) => removeImage(conn, argv.name, { onLog: (m) => ctx.log.warn(m) }));
    if (ctx.json) return ctx.out.json(r);
    ctx.out.line(`removed image ${r.name} (${r.removedVolumes.length} volume${r.removedVolumes.length === 1 ? '' : 's'})`);
  },
};

const buildCommand: Cmd<{ name: string; force: boolean; profile: BuildProfile }> = {
  command: 'build [name]',
  describe: `build an image offline with debootstrap and import it (known: ${DEFAULT_IMAGE})`,
  builder: (y) =>
    y
      .positional('name', { type: 'string', default: DEFAULT_IMAGE, describe: 'image to build' })
      .option('profile', {
        type: 'string',
        choices: BUILD_PROFILES,
        default: 'tuned',
        describe: 'tuned: boots to sshd fast; stock: same packages with Debian\'s defaults (imported as NAME-stock)',
      })
      .option('force', { alias: 'f', type: 'boolean', default: false, describe: 'replace the image if it is already in the pool' }) as never,
  handler: (argv) =>
    runImageJob(argv, 'image-build', 'built and imported', (conn, hooks) => core().then((c) => c.buildImage(conn, argv.name, { force: argv.force, profile: argv.profile, ...hooks }))),
};

export const imageCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'image <command>',
  aliases: ['images'],
  describe: 'base images: import, list, rm, build',
  builder: (y: Argv<GlobalArgs>) =>
    y
      .command(importCommand as never)
      .command(listCommand as never)
      .command(rmCommand as never)
      .command(buildCommand as never)
      .demandCommand(1, 'name an image command: import, list, rm, build') as never,
  handler: () => undefined,
};
