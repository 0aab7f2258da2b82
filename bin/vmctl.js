#!/usr/bin/env node
import('../dist/cli/main.js').then((m) => m.main(process.argv.slice(2))).then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(`vmctl: internal error: ${err?.stack ?? err}`); process.exitCode = 70; },
);
