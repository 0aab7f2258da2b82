/**
 * What `vmctl template list` and `vmctl template show` report: every visible
 * template with where it comes from (the user's directory or vm-templates/
 * shipped with vmctl), what it extends and a summary of what it resolves to;
 * and one template resolved after extends with the schema's defaults filled.
 */
import path from 'node:path';
import { Document } from 'yaml';
import { defaultTemplateDirs, findIn, listTemplates, SHIPPED_TEMPLATE_DIR } from './dirs.js';
import { checkTemplateDocument, loadError } from './load.js';
import type { TemplateSpec } from './model.js';
import { displayPath } from './parse.js';
import { formatProblem } from './problems.js';

/** shipped: vm-templates/ of this installation; user: any other directory (~/.config/vmctl/templates) */
export type TemplateOrigin = 'user' | 'shipped';

export function originOf(dir: string): TemplateOrigin {
  return path.resolve(dir) === path.resolve(SHIPPED_TEMPLATE_DIR) ? 'shipped' : 'user';
}

export interface TemplateListEntry {
  name: string;
  origin: TemplateOrigin;
  /** the file that defines it, as shown to the user */
  file: string;
  /** lower-priority templates of the same name this one hides */
  overrides: { origin: TemplateOrigin; file: string }[];
  /** the `extends` field of the file itself */
  extends?: string;
  description?: string;
  /** after extends and defaults; absent when the template does not load */
  cpus?: number;
  memoryMiB?: number;
  /** the template's image; absent when it uses the default image */
  image?: string;
  /** the first problem, when the template does not load */
  problem?: string;
}

/** Every template visible through `dirs`, by name, each resolved (a broken one is listed with its first problem). */
export async function listTemplateEntries(dirs: readonly string[] = defaultTemplateDirs()): Promise<TemplateListEntry[]> {
  const infos = await listTemplates(dirs);
  return Promise.all(
    infos.map(async (info): Promise<TemplateListEntry> => {
      const checked = await checkTemplateDocument(info.name, { dirs });
      const entry: TemplateListEntry = {
        name: info.name,
        origin: originOf(dirs[info.dirIndex]!),
        file: displayPath(info.file),
        overrides: info.shadows.map((f) => ({ origin: originOf(path.dirname(f)), file: displayPath(f) })),
        ...(info.extends !== undefined ? { extends: info.extends } : {}),
        ...(info.description !== undefined ? { description: info.description } : {}),
      };
      if (!checked.ok) return { ...entry, problem: formatProblem(checked.problems[0]!) };
      const { spec } = checked.value.resolved;
      return { ...entry, cpus: spec.cpus, memoryMiB: spec.memoryMiB, ...(spec.image !== undefined ? { image: spec.image } : {}) };
    }),
  );
}

export interface ShownTemplate {
  name: string;
  origin: TemplateOrigin;
  /** the files of the extends chain, the template itself first */
  files: string[];
  /** the template names of the extends chain, the template itself first */
  chain: string[];
  /** the merged template after extends, with defaults, in template syntax */
  template: Record<string, unknown>;
  /** the same, normalised (sizes in MiB / bytes) as create uses it */
  spec: TemplateSpec;
}

/** One template resolved after extends and defaults. Throws like loadTemplate (NOT_FOUND naming the available ones, INVALID_TEMPLATE, …). */
export async function showTemplate(name: string, dirs: readonly string[] = defaultTemplateDirs()): Promise<ShownTemplate> {
  const r = await checkTemplateDocument(name, { dirs });
  if (!r.ok) throw loadError(name, r.problems);
  const top = await findIn(name, dirs, 0);
  return {
    name,
    origin: top ? originOf(dirs[top.dirIndex]!) : 'user',
    files: r.value.resolved.files,
    chain: r.value.chain,
    template: r.value.document,
    spec: r.value.resolved.spec,
  };
}

/** The resolved template as YAML (built with the yaml library), headed by comments saying where it came from. */
export function templateYaml(t: ShownTemplate): string {
  const doc = new Document(t.template);
  doc.commentBefore = [
    ` template "${t.name}" (${t.origin}), resolved after extends and defaults`,
    ` extends: ${t.chain.length > 1 ? t.chain.join(' → ') : 'nothing'}`,
    ...t.files.map((f) => ` ${f}`),
  ].join('\n');
  return doc.toString({ lineWidth: 0 });
}
