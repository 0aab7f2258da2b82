/**
 * `extends` resolution: find a template by name, follow its `extends` chain
 * through the template directories and merge it (merge.ts), remembering which
 * file every value came from so problems can name it.
 *
 * A template extending its own name means the next directory's template of
 * that name (a user's default.yaml may `extends: default`); with no such
 * template further down, that is a cycle like any other (a → b → a).
 */
import { readFile } from 'node:fs/promises';
import { checkTemplateName } from '../names.js';
import { findIn, listTemplates } from './dirs.js';
import { mergeTemplates } from './merge.js';
import { displayPath, parseTemplateText, type ParsedTemplateFile } from './parse.js';
import { fromPointer, hasPath, toPointer, type TemplateProblem } from './problems.js';
import type { Blame } from './validate.js';

export interface ExtendsChain {
  /** the parsed files, the template itself first */
  chain: ParsedTemplateFile[];
  /** the template names along the chain, the template itself first */
  names: string[];
  /** the chain merged, without `extends` (not validated, no defaults yet) */
  merged: Record<string, unknown>;
  /** which file (and where in it) a JSON pointer of `merged` came from */
  blame: Blame;
}

/** "template "a": extends cycle a → b → a" */
export function cycleMessage(names: readonly string[]): string {
  return `template "${names[0]}": extends cycle ${names.join(' → ')}`;
}

async function availableNames(dirs: readonly string[]): Promise<string> {
  return (await listTemplates(dirs)).map((t) => t.name).join(', ') || 'none';
}

/** Find `name` in `dirs` and follow its extends chain; problems for anything missing, unreadable, malformed or cyclic. */
export async function resolveExtends(
  name: string,
  dirs: readonly string[],
  nameSource: string,
): Promise<{ ok: true; value: ExtendsChain } | { ok: false; problems: TemplateProblem[] }> {
  const fail = (problems: TemplateProblem[]) => ({ ok: false as const, problems });
  const nameProblem = checkTemplateName(name);
  if (nameProblem) return fail([{ source: nameSource, path: '', rule: 'name', message: nameProblem }]);
  const top = await findIn(name, dirs, 0);
  if (!top) {
    return fail([
      {
        source: nameSource,
        path: '',
        rule: 'not-found',
        message: `unknown template "${name}" (available: ${await availableNames(dirs)}; searched ${dirs.join(', ')})`,
      },
    ]);
  }

  const chain: ParsedTemplateFile[] = [];
  const names: string[] = [];
  const seen: string[] = [];
  let cur: { name: string; file: string; dirIndex: number } = { name, ...top };
  for (;;) {
    const shown = displayPath(cur.file);
    if (seen.includes(cur.file)) {
      const last = chain[chain.length - 1]!;
      return fail([
        { source: last.source, path: '/extends', rule: 'extends-cycle', message: cycleMessage([...names, cur.name]), ...last.position('/extends') },
      ]);
    }
    seen.push(cur.file);
    let text: string;
    try {
      text = await readFile(cur.file, 'utf8');
    } catch (err) {
      return fail([{ source: shown, path: '', rule: 'read', message: `cannot read: ${(err as Error).message}` }]);
    }
    const parsed = parseTemplateText(text, shown);
    if (!parsed.ok) return fail(parsed.problems);
    chain.push(parsed.file);
    names.push(cur.name);
    const parent = parsed.file.data.extends;
    if (parent === undefined) break;
    const at = { source: shown, path: '/extends', ...parsed.file.position('/extends') };
    const parentProblem = typeof parent === 'string' ? checkTemplateName(parent) : 'must be a template name';
    if (parentProblem !== null) return fail([{ ...at, rule: 'extends', message: parentProblem }]);
    const parentName = parent as string;
    const self = parentName === cur.name;
    const found = await findIn(parentName, dirs, self ? cur.dirIndex + 1 : 0);
    if (!found && self) {
      const message = `${cycleMessage([...names, parentName])} (no lower-priority template directory has a "${parentName}" to extend)`;
      return fail([{ ...at, rule: 'extends-cycle', message }]);
    }
    if (!found) return fail([{ ...at, rule: 'extends', message: `unknown template "${parentName}" (available: ${await availableNames(dirs)})` }]);
    cur = { name: parentName, ...found };
  }

  let merged: Record<string, unknown> = {};
  for (const f of [...chain].reverse()) merged = mergeTemplates(merged, f.data);
  delete merged.extends;

  const blame: Blame = (pointer) => {
    const segs = fromPointer(pointer);
    for (let n = segs.length; n >= 0; n--) {
      const prefix = segs.slice(0, n);
      for (const f of chain) {
        if (hasPath(f.data, prefix) && (n > 0 || f === chain[0])) {
          return { source: f.source, ...f.position(toPointer(prefix)) };
        }
      }
    }
    return { source: chain[0]!.source };
  };
  return { ok: true, value: { chain, names, merged, blame } };
}
