/**
 * JSON Schema (draft-07, ajv strict mode) of a vmctl lab file. Compiled ahead of
 * time into validate.gen.ts by `npm run codegen:templates` (the same generator and
 * ajv options as the template schema; a unit test fails when it is stale). The
 * annotation keywords x-error / x-unit work as in the template schema.
 *
 * Cross-field rules (unique names, networks and `after` that exist, no cycles,
 * addresses inside their subnet, limits) are checked in code (load.ts).
 */
import { IMAGE_NAME_RE, IPV4_RE, TEMPLATE_NAME_RE } from '../names.js';

/** a lab's name, a lab VM's name, a lab network's name: short, so `PREFIX-LAB-VM-N` stays a VM name */
export const LAB_NAME_RE = /^[a-z][a-z0-9-]{0,19}$/;
export const LAB_PART_RE = /^[a-z][a-z0-9-]{0,15}$/;
export const LAB_PREFIX_RE = /^[a-z][a-z0-9-]{0,15}$/;
export const LANG_RE = /^[a-z]{2}(-[A-Z]{2})?$/;
export { IPV4_RE };
const IPV4 = IPV4_RE.source.slice(1, -1);
export const CIDR_RE = new RegExp(`^${IPV4}/(1[6-9]|2[0-9])$`);
const SIZE = '^([0-9]+(?:\\.[0-9]+)?) ?(?:([MmGgTt])(?:[iI]?[bB])?)?$';
const TEXT = '^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$';
const ONE_LINE = '^[^\\u0000-\\u001f\\u007f]*$';

const part = (what: string) => ({
  type: 'string',
  pattern: LAB_PART_RE.source,
  'x-error': `must be a ${what} name (lowercase letters, digits, '-', max 16, starting with a letter)`,
});

/** text in one language, or per language: { en: "…", ko: "…" } */
const localized = (max: number) => ({
  type: ['string', 'object'],
  maxLength: max,
  pattern: TEXT,
  propertyNames: { pattern: LANG_RE.source },
  minProperties: 1,
  additionalProperties: { type: 'string', maxLength: max, pattern: TEXT, 'x-error': 'must be text without control characters' },
  'x-error': 'must be text, or a mapping of language codes (en, ko…) to text',
});

const size = (unit: string) => ({
  type: ['integer', 'string'],
  minimum: 1,
  pattern: SIZE,
  'x-unit': unit,
  'x-error': `must be a size in ${unit} or like 512MiB or 2GiB`,
});

/** where a check or solution step runs, and what it runs */
const ON_PROP = { type: 'string', pattern: '^(host|[a-z][a-z0-9-]{0,18})$', 'x-error': "must be 'host' or a lab VM name" } as const;
const RUN_PROP = { type: 'string', minLength: 1, maxLength: 8192, pattern: TEXT, 'x-error': 'must be a shell command (text without control characters)' } as const;

export const labSchema = {
  $id: 'https://vmctl.dev/schemas/lab/1',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'vms'],
  properties: {
    name: { type: 'string', pattern: LAB_NAME_RE.source, 'x-error': "must be a lab name (lowercase letters, digits, '-', max 20, starting with a letter)" },
    title: localized(200),
    description: localized(4000),
    /** lab up takes a `baseline` snapshot of every VM for lab reset; off for a lab whose VMs must move with --copy-storage (internal snapshots live in the disks and cannot travel) */
    baseline: { type: 'boolean', default: true },
    /** further libvirt hosts the lab's exercises use (a second host for DR or migration): given at `lab up --peer NAME=URI` */
    peers: {
      type: 'array',
      maxItems: 4,
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name'],
        properties: { name: part('peer'), description: localized(500) },
      },
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        vms: { type: 'integer', minimum: 1, maximum: 32, default: 8 },
        memory: { ...size('MiB'), default: '8GiB' },
      },
    },
    networks: {
      type: 'array',
      maxItems: 8,
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'subnet'],
        properties: {
          name: part('network'),
          mode: { enum: ['isolated', 'nat'], default: 'isolated' },
          subnet: { type: 'string', pattern: CIDR_RE.source, 'x-error': 'must be an IPv4 subnet like 10.20.0.0/24 (prefix /16 to /29)' },
        },
      },
    },
    vms: {
      type: 'array',
      minItems: 1,
      maxItems: 32,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name'],
        properties: {
          name: part('VM'),
          template: { type: 'string', pattern: TEMPLATE_NAME_RE.source, default: 'default', 'x-error': 'must be a template name' },
          image: { type: 'string', pattern: IMAGE_NAME_RE.source, 'x-error': 'must be an image name' },
          count: { type: 'integer', minimum: 1, maximum: 16, default: 1 },
          cpus: { type: 'integer', minimum: 1, maximum: 16 },
          memory: { ...size('MiB'), minimum: 64 },
          diskSize: size('GiB'),
          /** model of the VM's NICs (the management NIC and the lab NICs): e1000 for a fully emulated one */
          nicModel: { enum: ['virtio', 'e1000', 'e1000e', 'rtl8139'] },
          /** bus of the root disk: sata/ide for a fully emulated one */
          diskBus: { enum: ['virtio', 'sata', 'scsi', 'ide'] },
          /** start and become ready only after these lab VMs are */
          after: { type: 'array', maxItems: 32, default: [], items: part('VM') },
          networks: {
            type: 'array',
            maxItems: 4,
            default: [],
            items: {
              type: ['string', 'object'],
              pattern: LAB_PART_RE.source,
              'x-error': 'must be a lab network name, or { network, address }',
              additionalProperties: false,
              required: ['network'],
              properties: {
                network: part('network'),
                address: { type: 'string', pattern: IPV4_RE.source, 'x-error': 'must be an IPv4 address' },
              },
            },
          },
          cloudInit: {
            type: 'object',
            additionalProperties: false,
            default: {},
            properties: {
              packages: {
                type: 'array',
                default: [],
                items: { type: 'string', pattern: '^[a-z0-9][a-z0-9+.-]*$', 'x-error': 'must be a Debian package name' },
              },
              runcmd: { type: 'array', default: [], items: { type: 'string', maxLength: 4096, pattern: TEXT, 'x-error': 'must be text without control characters' } },
              files: {
                type: 'array',
                default: [],
                items: {
                  type: 'object',
                  additionalProperties: false,
                  required: ['path', 'content'],
                  properties: {
                    path: { type: 'string', pattern: '^/[A-Za-z0-9._/+-]{1,255}$', 'x-error': 'must be an absolute path (letters, digits, . _ / + -)' },
                    content: { type: 'string', maxLength: 65536, pattern: TEXT, 'x-error': 'must be text without control characters' },
                    mode: { type: 'string', pattern: '^0[0-7]{3}$', default: '0644', 'x-error': "must be an octal mode like '0644'" },
                  },
                },
              },
            },
          },
          /** libvirt domain knobs for lessons on restart on failure */
          onCrash: { enum: ['destroy', 'restart', 'preserve', 'coredump-destroy', 'coredump-restart'] },
          watchdog: { enum: ['none', 'reset', 'poweroff', 'pause'] },
          autostart: { type: 'boolean' },
        },
      },
    },
    exercises: {
      type: 'array',
      maxItems: 64,
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['id', 'title'],
        properties: {
          id: part('exercise'),
          title: localized(200),
          instructions: localized(20000),
          checks: {
            type: 'array',
            maxItems: 64,
            default: [],
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['name', 'on', 'run'],
              properties: {
                name: localized(200),
                /** 'host', or the lab VM (with count > 1: NAME-N) the command runs in over SSH */
                on: ON_PROP,
                run: RUN_PROP,
                exit: { type: 'integer', minimum: 0, maximum: 255, default: 0 },
                /** a regular expression the output (stdout and stderr) must match */
                output: { type: 'string', maxLength: 1024, pattern: ONE_LINE, 'x-error': 'must be one line (a regular expression)' },
                timeout: { type: 'integer', minimum: 1, maximum: 3600, default: 60, 'x-unit': 's' },
                hint: localized(2000),
              },
            },
          },
          /** the steps that solve the exercise (`vmctl lab solve`: for teachers and CI) */
          solution: {
            type: 'array',
            maxItems: 64,
            default: [],
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['on', 'run'],
              properties: {
                on: ON_PROP,
                run: RUN_PROP,
                timeout: { type: 'integer', minimum: 1, maximum: 3600, default: 300, 'x-unit': 's' },
              },
            },
          },
        },
      },
    },
  },
} as const;
