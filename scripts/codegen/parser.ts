/**
 * Recursive-descent parser for the rpcgen subset used by libvirt (RFC 4506
 * section 6 plus rpcgen's `%` passthrough lines and `unsigned` shorthand).
 *
 *   definition  := const | enum | struct | union | typedef | '%' line
 *   declaration := 'void' | type ident | type ident '[' v ']' | type ident '<' v? '>'
 *                | 'opaque' ident ('[' v ']' | '<' v? '>') | 'string' ident '<' v? '>'
 *                | type '*' ident
 */
import {
  CodegenError,
  type Annotation,
  type Decl,
  type Definition,
  type EnumMember,
  type NamedDecl,
  type TypeSpec,
  type UnionArm,
  type Value,
  type XFile,
} from './ast.js';
import { parseAnnotations, parseIntLiteral, tokenize, type Token } from './lexer.js';

const RESERVED = new Set([
  'bool',
  'case',
  'char',
  'const',
  'default',
  'double',
  'enum',
  'float',
  'hyper',
  'int',
  'long',
  'opaque',
  'program',
  'quadruple',
  'short',
  'string',
  'struct',
  'switch',
  'typedef',
  'union',
  'unsigned',
  'version',
  'void',
]);

class Parser {
  private i = 0;
  constructor(private readonly toks: readonly Token[]) {}

  private peek(off = 0): Token {
    return (this.toks[Math.min(this.i + off, this.toks.length - 1)] as Token);
  }

  private next(): Token {
    const t = this.peek();
    if (this.i < this.toks.length - 1) this.i++;
    return t;
  }

  private fail(msg: string, t: Token = this.peek()): never {
    throw new CodegenError(`${msg} (found ${t.kind === 'eof' ? 'end of file' : `'${t.text}'`})`, t.loc);
  }

  private isPunct(p: string, off = 0): boolean {
    const t = this.peek(off);
    return t.kind === 'punct' && t.text === p;
  }

  private isWord(w: string, off = 0): boolean {
    const t = this.peek(off);
    return t.kind === 'ident' && t.text === w;
  }

  private expectPunct(p: string): Token {
    if (!this.isPunct(p)) this.fail(`expected '${p}'`);
    return this.next();
  }

  private expectWord(w: string): Token {
    if (!this.isWord(w)) this.fail(`expected '${w}'`);
    return this.next();
  }

  private ident(what = 'identifier'): Token {
    const t = this.peek();
    if (t.kind !== 'ident' || RESERVED.has(t.text)) this.fail(`expected ${what}`);
    return this.next();
  }

  private value(): Value {
    const t = this.peek();
    if (t.kind === 'number') {
      this.next();
      return { kind: 'num', value: parseIntLiteral(t.text), raw: t.text, loc: t.loc };
    }
    if (t.kind === 'ident' && !RESERVED.has(t.text)) {
      this.next();
      return { kind: 'ref', name: t.text, loc: t.loc };
    }
    return this.fail('expected a constant or number');
  }

  parseFile(file: string): XFile {
    const definitions: Definition[] = [];
    while (this.peek().kind !== 'eof') definitions.push(this.definition());
    return { file, definitions };
  }

  private definition(): Definition {
    const t = this.peek();
    if (t.kind === 'passthrough') {
      this.next();
      return { kind: 'passthrough', text: t.text, loc: t.loc };
    }
    if (t.kind !== 'ident') this.fail('expected a definition');
    switch (t.text) {
      case 'const': {
        this.next();
        const name = this.ident('constant name').text;
        this.expectPunct('=');
        const value = this.value();
        this.expectPunct(';');
        return { kind: 'const', name, value, loc: t.loc };
      }
      case 'enum': {
        this.next();
        const name = this.ident('enum name').text;
        const members = this.enumBody();
        this.expectPunct(';');
        return { kind: 'enum', name, members, loc: t.loc };
      }
      case 'struct': {
        this.next();
        const name = this.ident('struct name').text;
        const fields = this.structBody();
        this.expectPunct(';');
        return { kind: 'struct', name, fields, loc: t.loc };
      }
      case 'union': {
        this.next();
        const name = this.ident('union name').text;
        const body = this.unionBody();
        this.expectPunct(';');
        return { kind: 'union', name, ...body, loc: t.loc };
      }
      case 'typedef': {
        this.next();
        const decl = this.declaration();
        if (decl.kind === 'void') this.fail('typedef of void', t);
        this.expectPunct(';');
        return { kind: 'typedef', name: decl.name, decl, loc: t.loc };
      }
      case 'program':
        return this.fail('rpcgen program definitions are not supported');
      default:
        return this.fail('expected const, enum, struct, union or typedef');
    }
  }

  private enumBody(): EnumMember[] {
    this.expectPunct('{');
    const members: EnumMember[] = [];
    for (;;) {
      const t = this.ident('enum member');
      let value: Value | null = null;
      if (this.isPunct('=')) {
        this.next();
        value = this.value();
      }
      const annotations: Annotation[] = parseAnnotations(t.doc);
      members.push({ name: t.text, value, annotations, loc: t.loc });
      if (this.isPunct(',')) {
        this.next();
        if (this.isPunct('}')) break; // trailing comma
        continue;
      }
      break;
    }
    this.expectPunct('}');
    if (members.length === 0) this.fail('empty enum');
    return members;
  }

  private structBody(): NamedDecl[] {
    this.expectPunct('{');
    const fields: NamedDecl[] = [];
    while (!this.isPunct('}')) {
      const d = this.declaration();
      this.expectPunct(';');
      if (d.kind === 'void') continue; // 'void;' members carry no data
      fields.push(d);
    }
    this.expectPunct('}');
    return fields;
  }

  private unionBody(): { discriminant: { name: string; type: TypeSpec }; arms: UnionArm[]; defaultArm: Decl | null } {
    this.expectWord('switch');
    this.expectPunct('(');
    const d = this.declaration();
    if (d.kind !== 'plain') this.fail('union discriminant must be a plain scalar declaration');
    this.expectPunct(')');
    this.expectPunct('{');
    const arms: UnionArm[] = [];
    let defaultArm: Decl | null = null;
    let sawDefault = false;
    while (!this.isPunct('}')) {
      if (this.isWord('default')) {
        if (sawDefault) this.fail('duplicate default arm');
        this.next();
        this.expectPunct(':');
        defaultArm = this.declaration();
        this.expectPunct(';');
        sawDefault = true;
        continue;
      }
      const labels: Value[] = [];
      while (this.isWord('case')) {
        this.next();
        labels.push(this.value());
        this.expectPunct(':');
      }
      if (labels.length === 0) this.fail("expected 'case' or 'default'");
      // `case A: case B: default: decl;` — labels falling through into default
      if (this.isWord('default')) {
        if (sawDefault) this.fail('duplicate default arm');
        this.next();
        this.expectPunct(':');
        defaultArm = this.declaration();
        this.expectPunct(';');
        sawDefault = true;
        continue; // the labels are covered by the default arm
      }
      const decl = this.declaration();
      this.expectPunct(';');
      arms.push({ labels, decl });
    }
    this.expectPunct('}');
    if (arms.length === 0 && !sawDefault) this.fail('union without arms');
    return { discriminant: { name: d.name, type: d.type }, arms, defaultArm: sawDefault ? defaultArm : null };
  }

  private typeSpec(): TypeSpec {
    const t = this.next();
    if (t.kind !== 'ident') this.fail('expected a type', t);
    switch (t.text) {
      case 'unsigned': {
        const n = this.peek();
        if (n.kind === 'ident') {
          switch (n.text) {
            case 'int':
            case 'long':
              this.next();
              return { kind: 'prim', name: 'uint' };
            case 'hyper':
              this.next();
              return { kind: 'prim', name: 'uhyper' };
            case 'char':
              this.next();
              return { kind: 'prim', name: 'uchar' };
            case 'short':
              this.next();
              return { kind: 'prim', name: 'ushort' };
          }
        }
        return { kind: 'prim', name: 'uint' }; // bare 'unsigned'
      }
      case 'int':
      case 'long':
        return { kind: 'prim', name: 'int' };
      case 'hyper':
        return { kind: 'prim', name: 'hyper' };
      case 'bool':
        return { kind: 'prim', name: 'bool' };
      case 'float':
        return { kind: 'prim', name: 'float' };
      case 'double':
        return { kind: 'prim', name: 'double' };
      case 'char':
        return { kind: 'prim', name: 'char' };
      case 'short':
        return { kind: 'prim', name: 'short' };
      case 'quadruple':
        return this.fail('quadruple is not supported', t);
      case 'struct':
      case 'union':
      case 'enum': {
        if (this.isPunct('{')) this.fail(`inline ${t.text} definitions are not supported`);
        const n = this.ident(`${t.text} name`);
        return { kind: 'named', name: n.text, loc: n.loc };
      }
      default:
        if (RESERVED.has(t.text)) this.fail('expected a type', t);
        return { kind: 'named', name: t.text, loc: t.loc };
    }
  }

  private bound(open: '<' | '['): Value | null {
    this.expectPunct(open);
    if (open === '<' && this.isPunct('>')) {
      this.next();
      return null;
    }
    const v = this.value();
    this.expectPunct(open === '<' ? '>' : ']');
    return v;
  }

  private declaration(): Decl {
    const start = this.peek();
    if (this.isWord('void')) {
      this.next();
      return { kind: 'void', loc: start.loc };
    }
    if (this.isWord('opaque')) {
      this.next();
      const name = this.ident('field name').text;
      if (this.isPunct('[')) {
        const len = this.bound('[');
        return { kind: 'fixedOpaque', name, len: len as Value, loc: start.loc };
      }
      if (this.isPunct('<')) return { kind: 'varOpaque', name, max: this.bound('<'), loc: start.loc };
      return this.fail("opaque needs '[n]' or '<n>'");
    }
    if (this.isWord('string')) {
      this.next();
      const name = this.ident('field name').text;
      if (!this.isPunct('<')) this.fail("string needs '<n>' or '<>'");
      return { kind: 'string', name, max: this.bound('<'), loc: start.loc };
    }
    const type = this.typeSpec();
    if (this.isPunct('*')) {
      this.next();
      const name = this.ident('field name').text;
      return { kind: 'optional', name, type, loc: start.loc };
    }
    const name = this.ident('field name').text;
    if (this.isPunct('[')) {
      const len = this.bound('[');
      return { kind: 'fixedArray', name, type, len: len as Value, loc: start.loc };
    }
    if (this.isPunct('<')) return { kind: 'varArray', name, type, max: this.bound('<'), loc: start.loc };
    return { kind: 'plain', name, type, loc: start.loc };
  }
}

export function parseX(src: string, file: string): XFile {
  return new Parser(tokenize(src, file)).parseFile(file);
}
