/** `vmctl template …`: the templates vmctl can create VMs from (src/core/template/catalog.ts). */
import type { Argv, CommandModule } from 'yargs';
import { makeContext, type GlobalArgs } from '../context.js';
import { DEFAULT_IMAGE } from '../../core/image/types.js';
import type { TemplateListEntry } from '../../core/template/catalog.js';
import { formatTable } from '../render.js';
// templates (yaml, the generated ajv validator) load only when a template command runs
const catalog = () => import('../../core/template/catalog.js');

type Cmd<A> = CommandModule<GlobalArgs, GlobalArgs & A>;

function fromText(e: TemplateListEntry): string {
  const hidden = [...new Set(e.overrides.map((o) => o.origin))];
  return hidden.length > 0 ? `${e.origin} (overrides ${hidden.join(', ')})` : e.origin;
}

/** "1 vCPU, 512 MiB, image debian-12 (default)" */
export function templateSummary(e: Pick<TemplateListEntry, 'cpus' | 'memoryMiB' | 'image'>): string {
  if (e.cpus === undefined || e.memoryMiB === undefined) return '';
  const image = e.image ?? `${DEFAULT_IMAGE} (default)`;
  const memory = e.memoryMiB % 1024 === 0 ? `${e.memoryMiB / 1024} GiB` : `${e.memoryMiB} MiB`;
  return `${e.cpus} vCPU${e.cpus === 1 ? '' : 's'}, ${memory}, image ${image}`;
}

function aboutText(e: TemplateListEntry): string {
  if (e.problem !== undefined) return `INVALID: ${e.problem.split('\n')[0]}`;
  const description = e.description?.split('\n')[0]?.trim();
  return description || templateSummary(e);
}

const listCommand: Cmd<object> = {
  command: 'list',
  aliases: ['ls'],
  describe: 'list templates: shipped (vm-templates/) and yours (~/.config/vmctl/templates, same name overrides)',
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const entries = await (await catalog()).listTemplateEntries();
    if (ctx.json) return ctx.out.json(entries.map((e) => ({ ...e, summary: templateSummary(e) })));
    ctx.out.line(
      formatTable(
        ['NAME', 'FROM', 'EXTENDS', 'DESCRIPTION'],
        entries.map((e) => [e.name, fromText(e), e.extends ?? '-', aboutText(e)]),
      ),
    );
  },
};

const showCommand: Cmd<{ name: string }> = {
  command: 'show <name>',
  describe: 'print a template resolved after extends and defaults (YAML, or --json)',
  builder: (y: Argv) => y.positional('name', { type: 'string', demandOption: true, describe: 'template name' }) as never,
  handler: async (argv) => {
    const ctx = makeContext(argv);
    const shown = await (await catalog()).showTemplate(argv.name);
    if (ctx.json) return ctx.out.json(shown);
    process.stdout.write((await catalog()).templateYaml(shown));
  },
};

export const templateCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'template',
  aliases: ['templates'],
  describe: 'VM templates: list, show',
  builder: (y) =>
    y
      .command(listCommand as never)
      .command(showCommand as never)
      .demandCommand(1, 'name a template command; see vmctl template --help'),
  handler: () => undefined,
};
