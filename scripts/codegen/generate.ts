/**
 * The libvirt-specific part: which inputs produce which files in
 * src/libvirt/generated, and with which options.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseCHeaders, type CConstants } from './cheader.js';
import { generateModules, type ModuleInput, type ModuleOutput, type StreamKind } from './emit.js';
import { emitConstants } from './emit-constants.js';
import { parseX } from './parser.js';
import type { LibvirtSource } from './source.js';

export const OUTPUT_DIR = 'src/libvirt/generated';

/**
 * Stream procedures the annotations do not describe correctly for a client:
 * - console and channel carry data both ways, but are annotated `@readstream`
 *   (the C remote driver only needs the annotation to create the stream);
 * - MIGRATE_PREPARE_TUNNEL3_PARAMS has no annotation at all (`@generate: none`,
 *   its stream is set up by hand in remote_driver.c and remote_daemon_dispatch.c)
 *   but uploads the migration data like MIGRATE_PREPARE_TUNNEL3 (`@writestream`).
 */
export const STREAM_OVERRIDES: Readonly<Record<string, StreamKind>> = {
  REMOTE_PROC_DOMAIN_OPEN_CONSOLE: 'both',
  REMOTE_PROC_DOMAIN_OPEN_CHANNEL: 'both',
  REMOTE_PROC_DOMAIN_MIGRATE_PREPARE_TUNNEL3_PARAMS: 'write',
};

interface XInput {
  readonly id: string;
  readonly input: string;
  readonly output: string;
  readonly className?: string;
  readonly streamOverrides?: Readonly<Record<string, StreamKind>>;
}

/** In dependency order (qemu uses remote's types). */
export const X_INPUTS: readonly XInput[] = [
  { id: 'virnet', input: 'src/rpc/virnetprotocol.x', output: 'virnet.gen.ts' },
  { id: 'keepalive', input: 'src/rpc/virkeepaliveprotocol.x', output: 'keepalive.gen.ts' },
  {
    id: 'remote',
    input: 'src/remote/remote_protocol.x',
    output: 'remote.gen.ts',
    className: 'RemoteProcedures',
    streamOverrides: STREAM_OVERRIDES,
  },
  { id: 'qemu', input: 'src/remote/qemu_protocol.x', output: 'qemu.gen.ts', className: 'QemuProcedures' },
];

export const CONSTANTS_OUTPUT = 'constants.gen.ts';
export const HEADER_DIR = 'include/libvirt';
/**
 * Internal headers whose enums travel over the wire: virDrvFeature values are
 * the argument of REMOTE_PROC_CONNECT_SUPPORTS_FEATURE (keepalive, event callbacks).
 */
export const EXTRA_HEADERS: readonly string[] = ['src/libvirt_internal.h'];

export interface GeneratedFile {
  /** repository-relative path */
  readonly path: string;
  readonly content: string;
}

export interface GenerationResult {
  readonly files: readonly GeneratedFile[];
  readonly modules: readonly ModuleOutput[];
  readonly constants: CConstants;
  readonly warnings: readonly string[];
}

export function versionNumber(version: string): number {
  const [maj = 0, min = 0, mic = 0] = version.split('.').map((p) => Number.parseInt(p, 10) || 0);
  return maj * 1_000_000 + min * 1_000 + mic;
}

export function loadCHeaders(src: LibvirtSource): CConstants {
  const dir = join(src.dir, HEADER_DIR);
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.h') || f.endsWith('.h.in'))
    .sort()
    .map((f) => ({ file: `${HEADER_DIR}/${f}`, text: readFileSync(join(dir, f), 'utf8') }));
  for (const f of EXTRA_HEADERS) files.push({ file: f, text: readFileSync(join(src.dir, f), 'utf8') });
  return parseCHeaders(files, { LIBVIRT_VERSION_NUMBER: String(versionNumber(src.version)) });
}

export function generateLibvirt(src: LibvirtSource): GenerationResult {
  const from = `libvirt ${src.version} (${src.debianVersion ?? 'upstream source'})`;
  const constants = loadCHeaders(src);
  const modules: ModuleInput[] = X_INPUTS.map((x) => ({
    id: x.id,
    x: parseX(readFileSync(join(src.dir, x.input), 'utf8'), x.input),
    origin: `${from} ${x.input}`,
    importPath: `./${x.output.replace(/\.ts$/, '.js')}`,
    ...(x.className ? { program: { className: x.className, streamOverrides: x.streamOverrides ?? {} } } : {}),
  }));
  const outs = generateModules({
    modules,
    cConstants: constants.values,
    xdrImport: '../xdr/index.js',
    callerImport: '../rpc/caller.js',
  });
  const files: GeneratedFile[] = [
    { path: `${OUTPUT_DIR}/${CONSTANTS_OUTPUT}`, content: emitConstants(constants, `${from} ${[`${HEADER_DIR}/*.h`, ...EXTRA_HEADERS].join(' ')}`, from) },
    ...outs.map((o, i) => ({ path: `${OUTPUT_DIR}/${(X_INPUTS[i] as XInput).output}`, content: o.code })),
  ];
  files.sort((a, b) => (a.path < b.path ? -1 : 1));
  return { files, modules: outs, constants, warnings: outs.flatMap((o) => o.warnings) };
}
