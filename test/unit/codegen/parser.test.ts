/** Unit tests of the generator's pieces: lexer, parser, C header evaluator, naming, error reporting. */
import { describe, expect, it } from 'vitest';
import { CodegenError } from '../../../scripts/codegen/ast.js';
import { evalCExpr, parseCHeaders } from '../../../scripts/codegen/cheader.js';
import { generateModules, type ProgramOptions } from '../../../scripts/codegen/emit.js';
import { parseAnnotations, tokenize } from '../../../scripts/codegen/lexer.js';
import { fieldName, methodName, typeName } from '../../../scripts/codegen/naming.js';
import { parseX } from '../../../scripts/codegen/parser.js';

const gen = (src: string, opts: { c?: Record<string, bigint>; program?: ProgramOptions } = {}): string => {
  const out = generateModules({
    modules: [{ id: 't', x: parseX(src, 't.x'), origin: 't.x', importPath: './t.js', ...(opts.program ? { program: opts.program } : {}) }],
    cConstants: new Map(Object.entries(opts.c ?? {})),
    xdrImport: './xdr.js',
    callerImport: './caller.js',
  });
  return (out[0] as { code: string }).code;
};

describe('naming', () => {
  it('follows the project naming rules', () => {
    expect(typeName('remote_nonnull_domain')).toBe('NonnullDomain');
    expect(typeName('remote_domain_lookup_by_name_args')).toBe('DomainLookupByNameArgs');
    expect(typeName('qemu_domain_monitor_command_args')).toBe('QemuDomainMonitorCommandArgs');
    expect(typeName('virNetMessageHeader')).toBe('VirNetMessageHeader');
    expect(typeName('remote_procedure')).toBe('Procedure');
    expect(typeName('virDomainState')).toBe('VirDomainState');
    expect(fieldName('need_results')).toBe('needResults');
    expect(fieldName('maxMem')).toBe('maxMem');
    expect(fieldName('callbackID')).toBe('callbackID');
    expect(methodName('DOMAIN_LOOKUP_BY_NAME')).toBe('domainLookupByName');
  });
});

describe('lexer', () => {
  it('attaches /** */ comments to the next token and keeps % lines', () => {
    const toks = tokenize('%#include "x.h"\n/* plain */ /** @a: 1\n * @b: two words */ FOO = 0x1f, BAR = -3', 'f.x');
    expect(toks.map((t) => [t.kind, t.text])).toEqual([
      ['passthrough', '#include "x.h"'],
      ['ident', 'FOO'],
      ['punct', '='],
      ['number', '0x1f'],
      ['punct', ','],
      ['ident', 'BAR'],
      ['punct', '='],
      ['number', '-3'],
      ['eof', ''],
    ]);
    expect(parseAnnotations(toks[1]?.doc)).toEqual([
      { key: 'a', value: '1' },
      { key: 'b', value: 'two words' },
    ]);
    expect(toks[2]?.doc).toBeUndefined();
  });

  it('reports positions', () => {
    expect(() => tokenize('const A = 1;\n  $', 'bad.x')).toThrow('bad.x:2:3: unexpected character');
    expect(() => tokenize('/* never closed', 'bad.x')).toThrow(/unterminated comment/);
  });
});

describe('parser', () => {
  it('parses every definition kind', () => {
    const x = parseX(
      `%passthrough
       const A = 010;
       enum e { X = 1, Y, };
       typedef int t<A>;
       struct s { unsigned u; unsigned hyper h; opaque o[3]; string str<>; s *next; void; };
       union u switch (unsigned int d) { case 1: case X: int i; case 2: void; default: void; };`,
      'p.x',
    );
    expect(x.definitions.map((d) => d.kind)).toEqual(['passthrough', 'const', 'enum', 'typedef', 'struct', 'union']);
    const st = x.definitions[4];
    expect(st?.kind === 'struct' && st.fields.map((f) => f.kind)).toEqual(['plain', 'plain', 'fixedOpaque', 'string', 'optional']);
    const un = x.definitions[5];
    expect(un?.kind === 'union' && un.arms.map((a) => a.labels.length)).toEqual([2, 1]);
    expect(un?.kind === 'union' && un.defaultArm?.kind).toBe('void');
  });

  it('reports syntax errors with file:line:col', () => {
    expect(() => parseX('struct s {\n  int a\n};', 's.x')).toThrow(/^s\.x:3:1: expected ';' \(found '}'\)/);
    expect(() => parseX('program P { version V { void F(void) = 1; } = 1; } = 2;', 'p.x')).toThrow(/program definitions are not supported/);
    expect(() => parseX('struct s { struct { int a; } inner; };', 'p.x')).toThrow(/inline struct definitions are not supported/);
    expect(() => parseX('union u switch (int d) { };', 'p.x')).toThrow(/union without arms/);
    expect(() => parseX('typedef string s;', 'p.x')).toThrow(/string needs/);
    expect(() => parseX('struct s { int case; };', 'p.x')).toThrow(/expected field name/);
  });
});

describe('generator errors', () => {
  it('rejects unknown names with their location', () => {
    expect(() => gen('struct s {\n  opaque o[NOPE];\n};')).toThrow(/t\.x:2:12: unknown constant NOPE/);
    expect(() => gen('struct s { missing_t m; };')).toThrow(/unknown type missing_t/);
  });

  it('accepts C constants supplied by the caller', () => {
    expect(gen('union u switch (int t) { case C_ONE: int i; };', { c: { C_ONE: 1n } })).toContain('case 1: // C_ONE');
  });

  it('rejects shapes TypeScript cannot represent or decode safely', () => {
    expect(() => gen('typedef int *o; struct s { o *p; };')).toThrow(/optional of an optional/);
    expect(() => gen('struct e { void; }; struct s { e all<>; };')).toThrow(/zero-size elements/);
    expect(() => gen('struct s { s inner; };')).toThrow(/contains itself/);
    expect(() => gen('struct a_b { int x; }; struct aB { int y; };')).toThrow(/exported twice/);
    expect(() => gen('union u switch (int t) { case 1: int a; case 1: int b; };')).toThrow(/duplicate case label 1/);
    expect(() => gen('union u switch (hyper t) { case 1: int a; };')).toThrow(/discriminant must be/);
    expect(() => gen('const A = 1; const A = 2;')).toThrow(/duplicate constant A/);
  });

  it('checks procedure metadata', () => {
    const prog = 'const P_PROGRAM = 1; const P_PROTOCOL_VERSION = 1; enum p_procedure { P_PROC_A = 1 };';
    expect(gen(prog, { program: { className: 'PP' } })).toContain('export class PP {');
    expect(() => gen(prog, { program: { className: 'PP', streamOverrides: { P_PROC_NOPE: 'both' } } })).toThrow(/unknown procedure P_PROC_NOPE/);
    expect(() => gen('enum p_procedure { P_PROC_A = 1 };', { program: { className: 'PP' } })).toThrow(/const P_PROGRAM is missing/);
    expect(() =>
      gen('const P_PROGRAM = 1; const P_PROTOCOL_VERSION = 1; enum p_procedure {\n/** @priority: urgent */ P_PROC_A = 1 };', {
        program: { className: 'PP' },
      }),
    ).toThrow(/bad @priority 'urgent'/);
  });
});

describe('C header constants', () => {
  const ev = (e: string, vars: Record<string, bigint> = {}): bigint => evalCExpr(e, (n) => vars[n]);

  it('evaluates C integer expressions', () => {
    expect(ev('1 << 2')).toBe(4n);
    expect(ev('(1 << 2) | 1')).toBe(5n);
    expect(ev('1 | 2 << 3')).toBe(17n);
    expect(ev('1U << 31')).toBe(2147483648n);
    expect(ev('0x10 + 010 + 10')).toBe(34n);
    expect(ev('-1')).toBe(-1n);
    expect(ev('~0 & 0xff')).toBe(255n);
    expect(ev('(4096 + 1)')).toBe(4097n);
    expect(ev('9007199254740991LL')).toBe(9007199254740991n);
    expect(ev('A | B', { A: 1n, B: 4n })).toBe(5n);
    expect(ev('10 - 2 - 3')).toBe(5n);
    expect(ev('100 / 10 / 5')).toBe(2n);
  });

  it('refuses what is not an integer expression', () => {
    for (const bad of ['"str"', '1.5', 'UNKNOWN', '(1', '1 +', '((x)[0])', '']) expect(() => ev(bad), bad).toThrow();
  });

  it('parses typedef enums and #defines, including forward references and sentinels', () => {
    const c = parseCHeaders([
      {
        file: 'a.h',
        text: `# define LATER_PLUS_ONE (B_TWO + 1)
typedef enum {
  A_ONE = 1, /* comment, with comma */
  B_TWO, // implicit
# ifdef VIR_ENUM_SENTINELS
  A_LAST
# endif
} virA;
# define VERSION_NUMBER @LIBVIRT_VERSION_NUMBER@
# define NOT_INT "x"`,
      },
    ], { LIBVIRT_VERSION_NUMBER: '9000000' });
    expect(c.values.get('B_TWO')).toBe(2n);
    expect(c.values.get('A_LAST')).toBe(3n);
    expect(c.values.get('LATER_PLUS_ONE')).toBe(3n);
    expect(c.values.get('VERSION_NUMBER')).toBe(9000000n);
    expect(c.values.has('NOT_INT')).toBe(false);
    expect(c.items.map((i) => i.def.name)).toEqual(['LATER_PLUS_ONE', 'virA', 'VERSION_NUMBER']);
    expect(c.skipped.map((s) => s.name)).toEqual(['NOT_INT']);
  });

  it('rejects duplicate constants', () => {
    expect(() => parseCHeaders([{ file: 'd.h', text: 'typedef enum { X = 1 } a; typedef enum { X = 2 } b;' }])).toThrow(CodegenError);
  });
});
