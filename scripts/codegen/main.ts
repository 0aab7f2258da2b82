/**
 * vmctl protocol code generator.
 *
 *   npm run codegen          regenerate src/libvirt/generated/*.gen.ts
 *   npm run codegen:check    regenerate in memory; exit 1 if a committed file differs
 *
 * Input: the libvirt source from scripts/codegen/fetch-libvirt-source.sh,
 * or LIBVIRT_SOURCE=<dir>.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { generateLibvirt, OUTPUT_DIR, type GeneratedFile } from './generate.js';
import { describeSource, locateLibvirtSource, REPO_ROOT } from './source.js';

export interface FileDiff {
  readonly path: string;
  readonly status: 'missing' | 'stale' | 'differs';
  readonly summary: string;
}

/** Compare generated files with what is on disk; also flags *.gen.ts files nothing generates. */
export function diffAgainstDisk(files: readonly GeneratedFile[], root = REPO_ROOT): FileDiff[] {
  const diffs: FileDiff[] = [];
  for (const f of files) {
    const abs = join(root, f.path);
    if (!existsSync(abs)) {
      diffs.push({ path: f.path, status: 'missing', summary: 'not on disk (run npm run codegen)' });
      continue;
    }
    const have = readFileSync(abs, 'utf8');
    if (have !== f.content) diffs.push({ path: f.path, status: 'differs', summary: summarize(have, f.content) });
  }
  const dir = join(root, OUTPUT_DIR);
  if (existsSync(dir)) {
    const want = new Set(files.map((f) => f.path));
    for (const name of readdirSync(dir).sort()) {
      const p = `${OUTPUT_DIR}/${name}`;
      if (name.endsWith('.gen.ts') && !want.has(p)) diffs.push({ path: p, status: 'stale', summary: 'no longer generated' });
    }
  }
  return diffs;
}

/** A short, human-readable description of how `have` (on disk) differs from `want` (generated). */
export function summarize(have: string, want: string): string {
  const a = have.split('\n');
  const b = want.split('\n');
  let first = 0;
  while (first < a.length && first < b.length && a[first] === b[first]) first++;
  let endA = a.length - 1;
  let endB = b.length - 1;
  while (endA >= first && endB >= first && a[endA] === b[endB]) {
    endA--;
    endB--;
  }
  const lines = [
    `committed ${a.length} lines, generated ${b.length}; differing region: committed lines ${first + 1}-${endA + 1}, generated lines ${first + 1}-${endB + 1}`,
  ];
  const show = (l: string | undefined): string => (l === undefined ? '<end of file>' : l.length > 160 ? `${l.slice(0, 160)}…` : l);
  for (let i = first; i < Math.min(first + 3, Math.max(endA, endB) + 1); i++) {
    if (a[i] !== b[i]) {
      lines.push(`  line ${i + 1}:`, `    - ${show(i <= endA ? a[i] : undefined)}`, `    + ${show(i <= endB ? b[i] : undefined)}`);
    }
  }
  return lines.join('\n');
}

function main(argv: readonly string[]): number {
  const check = argv.includes('--check');
  const unknown = argv.filter((a) => a !== '--check');
  if (unknown.length) {
    process.stderr.write(`usage: tsx scripts/codegen/main.ts [--check]\n`);
    return 2;
  }
  const src = describeSource(locateLibvirtSource());
  const res = generateLibvirt(src);
  for (const w of res.warnings) process.stderr.write(`codegen: warning: ${w}\n`);
  const procs = res.modules.reduce((a, m) => a + m.procedures.length, 0);
  const events = res.modules.reduce((a, m) => a + m.events.length, 0);
  const types = res.modules.reduce((a, m) => a + m.typeCount, 0);
  const cenums = res.constants.items.filter((i) => i.kind === 'enum').length;
  const cdefs = res.constants.items.length - cenums;
  const stats = `libvirt ${src.version} (${src.debianVersion ?? 'upstream'}): ${types} types, ${procs} procedures, ${events} events, ${cenums} C enums, ${cdefs} C macros`;

  if (check) {
    const diffs = diffAgainstDisk(res.files);
    if (diffs.length === 0) {
      process.stdout.write(`codegen:check: ${res.files.length} files up to date (${stats})\n`);
      return 0;
    }
    process.stderr.write(`codegen:check: ${diffs.length} generated file(s) out of date — run \`npm run codegen\`:\n`);
    for (const d of diffs) process.stderr.write(`\n${d.path}: ${d.status}\n${d.summary}\n`);
    return 1;
  }

  let written = 0;
  for (const f of res.files) {
    const abs = join(REPO_ROOT, f.path);
    if (existsSync(abs) && readFileSync(abs, 'utf8') === f.content) continue;
    mkdirSync(dirname(abs), { recursive: true });
    writeFileSync(abs, f.content);
    written++;
    process.stdout.write(`wrote ${f.path}\n`);
  }
  for (const d of diffAgainstDisk(res.files)) {
    if (d.status === 'stale') process.stderr.write(`codegen: warning: ${d.path} is no longer generated; delete it\n`);
  }
  process.stdout.write(`codegen: ${written} file(s) written, ${res.files.length - written} unchanged (${stats})\n`);
  return 0;
}

const isEntry = process.argv[1] !== undefined && /scripts[\\/]codegen[\\/]main\.ts$/.test(process.argv[1]);
if (isEntry) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`codegen: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  }
}
