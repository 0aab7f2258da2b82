/**
 * JSON Schema (draft-07, ajv strict mode) of a vmctl template after `extends`
 * is resolved and before normalisation. Defaults here are filled in by ajv
 * (`useDefaults`). Compiled ahead of time into validate.gen.ts by
 * `npm run codegen:templates` (scripts/codegen-templates.ts holds the ajv
 * options); a unit test fails when that file is stale. Two annotation
 * keywords, registered as a vocabulary there, drive the one-line error messages:
 *   x-error  the message for a failed `pattern` or `type`
 *   x-unit   appended to `minimum`/`maximum` messages ("must be >= 64 (MiB)")
 *
 * Cross-field rules (unique disk names, ide on q35, size strings ≥ minimum…)
 * are checked in code after the schema (see semanticProblems in load.ts).
 */
import {
  BRIDGE_NAME_RE,
  DISK_NAME_RE,
  HOSTNAME_RE,
  IMAGE_NAME_RE,
  NETWORK_NAME_RE,
  SSH_PUBLIC_KEY_RE,
  TEMPLATE_NAME_RE,
  USER_NAME_RE,
} from '../names.js';

export const MIN_MEMORY_MIB = 64;
export const MAX_MEMORY_MIB = 4 * 1024 * 1024; // 4 TiB
export const MAX_CPUS = 64;
export const MIN_DISK_BYTES = 1024 * 1024; // 1 MiB
export const MAX_DISK_BYTES = 64 * 1024 ** 4; // 64 TiB

/** "512", "512MiB", "2G", "2 GiB", "1.5GB" (M/G/T are binary whatever the spelling, like qemu-img). */
export const SIZE_RE = /^([0-9]+(?:\.[0-9]+)?) ?(?:([MmGgTt])(?:[iI]?[bB])?)?$/;

export const NIC_MODELS = ['virtio', 'e1000', 'e1000e', 'rtl8139'] as const;
export const DISK_BUSES = ['virtio', 'sata', 'scsi', 'ide'] as const;

const LOOPBACK_V4 = '^127(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$';
const MAC = '^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$';
// one line of printable text: no control characters
const ONE_LINE = '^[^\\u0000-\\u001f\\u007f]*$';
// text that may span lines (runcmd, description) but holds no other control characters
const TEXT = '^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$';

const nicCommon = {
  model: { enum: [...NIC_MODELS], default: 'virtio' },
  mac: { type: 'string', pattern: MAC, 'x-error': 'must be a MAC address like 52:54:00:12:34:56' },
};

export const templateSchema = {
  $id: 'https://vmctl.dev/schemas/template/1',
  type: 'object',
  additionalProperties: false,
  properties: {
    extends: {
      type: 'string',
      pattern: TEMPLATE_NAME_RE.source,
      'x-error': "must be a template name (lowercase letters, digits, '.', '_', '-')",
    },
    description: { type: 'string', maxLength: 1024, pattern: TEXT, 'x-error': 'must be text without control characters' },
    image: {
      type: 'string',
      pattern: IMAGE_NAME_RE.source,
      'x-error': "must be an image name (letters, digits, '.', '_', '+', '-')",
    },
    cpus: { type: 'integer', minimum: 1, maximum: MAX_CPUS, default: 1 },
    memory: {
      type: ['integer', 'string'],
      minimum: MIN_MEMORY_MIB,
      maximum: MAX_MEMORY_MIB,
      pattern: SIZE_RE.source,
      default: 512,
      'x-unit': 'MiB',
      'x-error': 'must be a size in MiB or like 512MiB or 2GiB',
    },
    machine: { enum: ['q35', 'pc'], default: 'q35' },
    firmware: { enum: ['bios', 'uefi'], default: 'bios' },
    accel: { enum: ['auto', 'kvm', 'tcg'], default: 'auto' },
    disks: {
      type: 'array',
      maxItems: 16,
      default: [{ name: 'root', size: '10GiB' }],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'size'],
        properties: {
          name: {
            type: 'string',
            pattern: DISK_NAME_RE.source,
            'x-error': "must be a disk name (lowercase letters, digits, '-', max 31, starting with a letter)",
          },
          size: {
            type: ['integer', 'string'],
            minimum: 1,
            pattern: SIZE_RE.source,
            'x-unit': 'GiB',
            'x-error': 'must be a size in GiB or like 10GiB or 512MiB',
          },
          bus: { enum: [...DISK_BUSES], default: 'virtio' },
          format: { enum: ['qcow2', 'raw'], default: 'qcow2' },
          image: {
            type: 'string',
            pattern: IMAGE_NAME_RE.source,
            'x-error': "must be an image name (letters, digits, '.', '_', '+', '-')",
          },
        },
      },
    },
    nics: {
      type: 'array',
      maxItems: 8,
      default: [{ type: 'user', forwards: [{ guestPort: 22 }] }],
      items: {
        type: 'object',
        required: ['type'],
        properties: { type: { enum: ['network', 'bridge', 'user'] } },
        discriminator: { propertyName: 'type' },
        oneOf: [
          {
            additionalProperties: false,
            properties: {
              type: { const: 'network' },
              network: {
                type: 'string',
                pattern: NETWORK_NAME_RE.source,
                default: 'default',
                'x-error': "must be a libvirt network name (letters, digits, '.', '_', '-')",
              },
              ...nicCommon,
            },
          },
          {
            additionalProperties: false,
            required: ['bridge'],
            properties: {
              type: { const: 'bridge' },
              bridge: {
                type: 'string',
                pattern: BRIDGE_NAME_RE.source,
                'x-error': "must be a bridge interface name (letters, digits, '.', '_', '-', max 15)",
              },
              ...nicCommon,
            },
          },
          {
            additionalProperties: false,
            properties: {
              type: { const: 'user' },
              forwards: {
                type: 'array',
                maxItems: 32,
                default: [],
                items: {
                  type: 'object',
                  additionalProperties: false,
                  required: ['guestPort'],
                  properties: {
                    host: {
                      type: 'string',
                      pattern: LOOPBACK_V4,
                      default: '127.0.0.1',
                      'x-error': 'must be a loopback address (127.x.y.z): forwards never listen on other addresses',
                    },
                    hostPort: { type: 'integer', minimum: 0, maximum: 65535, default: 0 },
                    guestPort: { type: 'integer', minimum: 1, maximum: 65535 },
                    proto: { enum: ['tcp', 'udp'], default: 'tcp' },
                  },
                },
              },
              ...nicCommon,
            },
          },
        ],
      },
    },
    boot: {
      type: 'object',
      required: ['type'],
      default: { type: 'disk' },
      properties: { type: { enum: ['disk', 'kernel'] } },
      discriminator: { propertyName: 'type' },
      oneOf: [
        { additionalProperties: false, properties: { type: { const: 'disk' } } },
        {
          additionalProperties: false,
          required: ['kernel'],
          properties: {
            type: { const: 'kernel' },
            kernel: { type: 'string', minLength: 1 },
            initrd: { type: 'string', minLength: 1 },
            cmdline: {
              type: 'string',
              maxLength: 2048,
              pattern: ONE_LINE,
              default: '',
              'x-error': 'must be one line without control characters',
            },
          },
        },
      ],
    },
    cloudInit: {
      type: 'object',
      additionalProperties: false,
      properties: {
        user: {
          type: 'string',
          pattern: USER_NAME_RE.source,
          default: 'vmctl',
          'x-error': "must be a Linux user name (lowercase letters, digits, '_', '-', max 32)",
        },
        hostname: {
          type: 'string',
          pattern: HOSTNAME_RE.source,
          'x-error': "must be a host name (letters, digits, '-', max 63)",
        },
        sshKeys: {
          type: 'array',
          default: [],
          items: {
            type: 'string',
            pattern: SSH_PUBLIC_KEY_RE.source,
            'x-error': 'must be one OpenSSH public key line ("ssh-ed25519 AAAA… comment")',
          },
        },
        packages: {
          type: 'array',
          default: [],
          items: {
            type: 'string',
            pattern: '^[A-Za-z0-9][A-Za-z0-9.+_:=~-]*$',
            'x-error': 'must be a package name (optionally =version)',
          },
        },
        runcmd: {
          type: 'array',
          default: [],
          items: { type: 'string', pattern: TEXT, 'x-error': 'must be text without control characters' },
        },
      },
    },
    graphics: { enum: ['none', 'vnc', 'spice'], default: 'none' },
    serial: { type: 'boolean', default: true },
    /** what the host does when the guest crashes (libvirt on_crash): restart for a service that must come back */
    onCrash: { enum: ['destroy', 'restart', 'preserve', 'coredump-destroy', 'coredump-restart'], default: 'destroy' },
    /** an emulated i6300esb watchdog and what it does when the guest stops feeding it */
    watchdog: { enum: ['none', 'reset', 'poweroff', 'pause'], default: 'none' },
  },
} as const;

/** The names of the top-level fields, for "did you mean" suggestions and docs. */
export const TEMPLATE_FIELDS = Object.keys(templateSchema.properties);
