#!/usr/bin/env node
// Runs the esbuild bundle (scripts/bundle.mjs); its entry calls main() from src/cli/main.ts.
import { existsSync } from 'node:fs';

const bundle = new URL('../dist/bundle/vmctl.mjs', import.meta.url);
if (!existsSync(bundle)) {
  console.error(`vmctl: ${bundle.pathname} is missing: run \`npm run build\` in ${new URL('..', import.meta.url).pathname}`);
  process.exitCode = 70;
} else {
  // VMCTL_DEBUG: stack traces through the bundle's linked source maps (parsing them costs start-up time)
  if (process.env.VMCTL_DEBUG) process.setSourceMapsEnabled(true);
  import(bundle.href).catch((err) => {
    console.error(`vmctl: internal error: ${err?.stack ?? err}`);
    process.exitCode = 70;
  });
}
