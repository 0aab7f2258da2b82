/**
 * Template directories and the templates in them. Highest priority first: the
 * user's ($XDG_CONFIG_HOME or ~/.config)/vmctl/templates, then vm-templates/
 * shipped with vmctl (found from the package root, not the cwd).
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { checkTemplateName } from '../names.js';
import { packagePath } from '../package-root.js';
import { parseTemplateText } from './parse.js';

/** vm-templates/ of this installation (found from src/, dist/ and dist/bundle/), without a trailing slash. */
export const SHIPPED_TEMPLATE_DIR = packagePath('vm-templates');

/** The user's template directory: $XDG_CONFIG_HOME/vmctl/templates or ~/.config/vmctl/templates. */
export function userTemplateDir(env: NodeJS.ProcessEnv = process.env, home = os.homedir()): string {
  const base = env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : path.join(home, '.config');
  return path.join(base, 'vmctl', 'templates');
}

/** Search order, highest priority first: the user's directory, then the shipped one. */
export function defaultTemplateDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  return [userTemplateDir(env), SHIPPED_TEMPLATE_DIR];
}

export const DEFAULT_TEMPLATE = 'default';

export interface TemplateInfo {
  name: string;
  file: string;
  /** index in the directory list */
  dirIndex: number;
  /** the description field, when the file parses */
  description?: string;
  /** the extends field, when the file parses and it is a string */
  extends?: string;
  /** files of the same name in lower-priority directories, hidden by this one */
  shadows: string[];
}

async function namesIn(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    return entries
      .filter((e) => (e.isFile() || e.isSymbolicLink()) && e.name.endsWith('.yaml'))
      .map((e) => e.name.slice(0, -'.yaml'.length))
      .filter((n) => checkTemplateName(n) === null)
      .sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
    throw err;
  }
}

/** Every template visible through `dirs`, by name. */
export async function listTemplates(dirs: readonly string[] = defaultTemplateDirs()): Promise<TemplateInfo[]> {
  const byName = new Map<string, TemplateInfo>();
  for (const [dirIndex, dir] of dirs.entries()) {
    for (const name of await namesIn(dir)) {
      const file = path.join(dir, `${name}.yaml`);
      const existing = byName.get(name);
      if (existing) existing.shadows.push(file);
      else byName.set(name, { name, file, dirIndex, shadows: [] });
    }
  }
  const infos = [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  await Promise.all(
    infos.map(async (info) => {
      try {
        const parsed = parseTemplateText(await readFile(info.file, 'utf8'), info.file);
        if (!parsed.ok) return;
        const { description, extends: parent } = parsed.file.data;
        if (typeof description === 'string') info.description = description;
        if (typeof parent === 'string') info.extends = parent;
      } catch {
        // unreadable: loadTemplate will say why
      }
    }),
  );
  return infos;
}

export async function findIn(name: string, dirs: readonly string[], from: number): Promise<{ file: string; dirIndex: number } | null> {
  for (let i = from; i < dirs.length; i++) {
    const file = path.join(dirs[i]!, `${name}.yaml`);
    try {
      if ((await stat(file)).isFile()) return { file, dirIndex: i };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw err;
    }
  }
  return null;
}
