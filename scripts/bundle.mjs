/**
 * Bundle the CLI with esbuild into dist/bundle/ (run by `npm run build` after tsc).
 *
 * One ESM entry, dist/bundle/vmctl.mjs, runs `main(process.argv.slice(2))`
 * from src/cli/main.ts exactly as bin/vmctl.js used to with dist/cli/main.js.
 * Code splitting keeps the lazy `await import(...)`s lazy (the VM core with
 * templates, images, cloud-init; the ssh transport): they become chunks.
 * The point is start-up time: a few files instead of hundreds of modules.
 *
 * External (loaded from node_modules at run time, never bundled):
 *   ssh2                         optional native addons (cpu-features, sshcrypto)
 *   pino, pino-pretty, thread-stream
 *                                worker-thread transports resolve files by path
 * Everything else (yargs, yaml, fast-xml-parser, cli-progress, …) is bundled,
 * cliui (yargs' help layout) from its CommonJS entry, which wraps at words.
 *
 * Files shipped beside the code (vm-templates/, cloud-init/, scripts/,
 * package.json) are found from the package root (src/core/package-root.ts),
 * which works from dist/bundle/ as well as from src/ and dist/<dir>/.
 *
 *   node scripts/bundle.mjs            build
 *   node scripts/bundle.mjs --metafile also write dist/bundle/meta.json (inputs per chunk)
 */
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const outdir = `${root}dist/bundle`;

export const EXTERNAL = ['ssh2', 'pino', 'pino-pretty', 'thread-stream'];

const ENTRY = `
import { main } from './src/cli/main.js';
// A command that has finished must not hang: should a socket, stream or timer be left open by
// mistake, the process exits anyway once its output is written, and says what was left (a bug).
const exitSoon = (code) => {
  const t = setInterval(() => {
    if (process.stdout.writableLength > 0 || process.stderr.writableLength > 0) return;
    const left = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout' && r !== 'TTYWrap');
    console.error(\`vmctl: internal: the command finished but \${left.join(', ') || 'something'} kept it running; exiting\`);
    process.exit(code);
  }, 3000);
  t.unref();
};
main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; exitSoon(code); },
  (err) => { console.error(\`vmctl: internal error: \${err?.stack ?? err}\`); process.exitCode = 70; exitSoon(70); },
);
`;

/** The entry point, as a virtual module (so it needs no file of its own). */
const entryPlugin = {
  name: 'vmctl-entry',
  setup(build) {
    build.onResolve({ filter: /^vmctl-entry$/ }, () => ({ path: 'vmctl-entry.js', namespace: 'vmctl-entry' }));
    build.onLoad({ filter: /.*/, namespace: 'vmctl-entry' }, () => ({ contents: ENTRY, loader: 'js', resolveDir: root }));
  },
};

/**
 * yargs' ESM shim finds its locale files (translated help and messages) from
 * its own import.meta.url, which in a bundle is dist/bundle/: point it at the
 * installed yargs package instead. Fails the build if yargs changes that line.
 */
const yargsLocalesPlugin = {
  name: 'yargs-locales',
  setup(build) {
    build.onLoad({ filter: /[\\/]yargs[\\/]lib[\\/]platform-shims[\\/]esm\.mjs$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      const from = "directory: resolve(__dirname, '../../../locales'),";
      if (!text.includes(from)) throw new Error(`${args.path}: no "${from}" to rewrite (yargs upgraded? check its locale lookup)`);
      const to = "directory: resolve(__vmctlCreateRequire(import.meta.url).resolve('yargs/package.json'), '../locales'),";
      return {
        contents: `import { createRequire as __vmctlCreateRequire } from 'node:module';\n${text.replace(from, to)}`,
        loader: 'js',
      };
    });
  },
};

/**
 * cliui's ESM entry (what yargs' ESM shim imports) wraps text at exactly the
 * column width, splitting words anywhere (`--timeout` became `-` + `-timeout`
 * at 80 columns); its CommonJS entry wraps at word boundaries (wrap-ansi).
 * Bundle the CommonJS one. Fails the build if cliui stops offering it.
 */
const cliuiWordWrapPlugin = {
  name: 'cliui-word-wrap',
  setup(build) {
    build.onResolve({ filter: /^cliui$/ }, async (args) => {
      if (args.pluginData === 'cliui-cjs') return undefined;
      const r = await build.resolve('cliui', { kind: 'require-call', resolveDir: args.resolveDir, pluginData: 'cliui-cjs' });
      if (r.errors.length > 0 || !r.path.endsWith('.cjs')) throw new Error(`cliui: no CommonJS entry to bundle (got ${r.path}); check how it wraps help text`);
      return { path: r.path };
    });
  },
};

export async function bundle({ metafile = false } = {}) {
  // built beside the old bundle and swapped in, so a vmctl started meanwhile never sees half a bundle
  const tmpdir = `${root}dist/.bundle-${process.pid}`;
  const olddir = `${tmpdir}-old`;
  await rm(tmpdir, { recursive: true, force: true });
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: [{ in: 'vmctl-entry', out: 'vmctl' }],
    outdir: tmpdir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    external: EXTERNAL,
    sourcemap: 'linked',
    sourcesContent: false,
    // bundled CommonJS packages (cli-progress, yaml, …) call require() for Node built-ins
    banner: { js: "import { createRequire as __vmctlBundleRequire } from 'node:module';\nconst require = __vmctlBundleRequire(import.meta.url);" },
    plugins: [entryPlugin, yargsLocalesPlugin, cliuiWordWrapPlugin],
    metafile,
    logLevel: 'warning',
    legalComments: 'none',
  });
  if (metafile) await writeFile(`${tmpdir}/meta.json`, JSON.stringify(result.metafile, null, 1));
  await rename(outdir, olddir).catch((e) => {
    if (e.code !== 'ENOENT') throw e;
  });
  await rename(tmpdir, outdir);
  await rm(olddir, { recursive: true, force: true });
  return result;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const metafile = process.argv.includes('--metafile');
  await bundle({ metafile });
}
