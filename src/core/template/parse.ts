/** Template files: YAML text → plain data, with positions (file:line:col) for problems. */
import os from 'node:os';
import path from 'node:path';
import { LineCounter, parseDocument, type Document } from 'yaml';
import { fromPointer, isPlainObject, type TemplateProblem } from './problems.js';

/** A parsed template file: the plain data plus a way to find where a pointer is. */
export interface ParsedTemplateFile {
  /** as shown in messages */
  source: string;
  data: Record<string, unknown>;
  position(pointer: string): { line: number; col: number } | undefined;
}

/** How a file path is shown: relative to the cwd when inside it, ~ for the home directory. */
export function displayPath(file: string, cwd = process.cwd(), home = os.homedir()): string {
  const rel = path.relative(cwd, file);
  if (rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel)) return rel;
  if (home && (file === home || file.startsWith(home + path.sep))) return '~' + file.slice(home.length);
  return file;
}

/** Parse one template's text. `source` is how the file is named in problems. */
export function parseTemplateText(
  text: string,
  source: string,
): { ok: true; file: ParsedTemplateFile } | { ok: false; problems: TemplateProblem[] } {
  const lineCounter = new LineCounter();
  const doc: Document = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, version: '1.2' });
  const yamlProblem = (message: string, offset: number | undefined): TemplateProblem => {
    const pos = offset === undefined ? undefined : lineCounter.linePos(offset);
    return { source, path: '', rule: 'yaml', message: `YAML: ${message}`, ...(pos ? { line: pos.line, col: pos.col } : {}) };
  };
  if (doc.errors.length > 0) {
    return {
      ok: false,
      problems: doc.errors.map((e) => {
        const msg = e.code === 'MULTIPLE_DOCS' ? "one template per file: remove the '---' document separator" : e.message.split('\n')[0] ?? e.message;
        return yamlProblem(msg, e.pos[0]);
      }),
    };
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return { ok: false, problems: [yamlProblem((err as Error).message, undefined)] };
  }
  if (!isPlainObject(data)) {
    const what = data === null || data === undefined ? 'the file is empty' : `found ${Array.isArray(data) ? 'a list' : typeof data}`;
    return { ok: false, problems: [{ source, path: '', rule: 'type', message: `must be a mapping of template fields (${what})` }] };
  }
  const position = (pointer: string): { line: number; col: number } | undefined => {
    const segs: (string | number)[] = fromPointer(pointer).map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : s));
    for (let n = segs.length; n >= 0; n--) {
      const node = doc.getIn(segs.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node && typeof node === 'object' && Array.isArray(node.range)) {
        const p = lineCounter.linePos(node.range[0]);
        return { line: p.line, col: p.col };
      }
    }
    return undefined;
  };
  return { ok: true, file: { source, data, position } };
}
