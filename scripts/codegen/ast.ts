/**
 * AST for the rpcgen subset of XDR used by libvirt's .x protocol files.
 */

export interface Loc {
  readonly file: string;
  readonly line: number;
  readonly col: number;
}

export const fmtLoc = (l: Loc): string => `${l.file}:${l.line}:${l.col}`;

export class CodegenError extends Error {
  override readonly name = 'CodegenError';
  constructor(message: string, loc?: Loc) {
    super(loc ? `${fmtLoc(loc)}: ${message}` : message);
  }
}

/** A constant value: a literal, or the name of a const / enum member / C constant. */
export type Value =
  | { readonly kind: 'num'; readonly value: bigint; readonly raw: string; readonly loc: Loc }
  | { readonly kind: 'ref'; readonly name: string; readonly loc: Loc };

export type PrimName =
  | 'int'
  | 'uint'
  | 'hyper'
  | 'uhyper'
  | 'bool'
  | 'float'
  | 'double'
  | 'char'
  | 'uchar'
  | 'short'
  | 'ushort';

export type TypeSpec =
  | { readonly kind: 'prim'; readonly name: PrimName }
  /** a struct, union, enum or typedef, by its .x name */
  | { readonly kind: 'named'; readonly name: string; readonly loc: Loc };

export type Decl =
  | { readonly kind: 'void'; readonly loc: Loc }
  | { readonly kind: 'plain'; readonly name: string; readonly type: TypeSpec; readonly loc: Loc }
  | { readonly kind: 'fixedArray'; readonly name: string; readonly type: TypeSpec; readonly len: Value; readonly loc: Loc }
  /** max null: unbounded `<>` */
  | { readonly kind: 'varArray'; readonly name: string; readonly type: TypeSpec; readonly max: Value | null; readonly loc: Loc }
  | { readonly kind: 'fixedOpaque'; readonly name: string; readonly len: Value; readonly loc: Loc }
  | { readonly kind: 'varOpaque'; readonly name: string; readonly max: Value | null; readonly loc: Loc }
  | { readonly kind: 'string'; readonly name: string; readonly max: Value | null; readonly loc: Loc }
  | { readonly kind: 'optional'; readonly name: string; readonly type: TypeSpec; readonly loc: Loc };

export type NamedDecl = Exclude<Decl, { kind: 'void' }>;

/** One `@key: value` line of a `/** ... *\/` comment. */
export interface Annotation {
  readonly key: string;
  readonly value: string;
}

export interface EnumMember {
  readonly name: string;
  /** null: implicit (previous + 1, or 0) */
  readonly value: Value | null;
  readonly annotations: readonly Annotation[];
  readonly loc: Loc;
}

export interface UnionArm {
  readonly labels: readonly Value[];
  readonly decl: Decl;
}

export type Definition =
  | { readonly kind: 'const'; readonly name: string; readonly value: Value; readonly loc: Loc }
  | { readonly kind: 'enum'; readonly name: string; readonly members: readonly EnumMember[]; readonly loc: Loc }
  | { readonly kind: 'struct'; readonly name: string; readonly fields: readonly NamedDecl[]; readonly loc: Loc }
  | {
      readonly kind: 'union';
      readonly name: string;
      readonly discriminant: { readonly name: string; readonly type: TypeSpec };
      readonly arms: readonly UnionArm[];
      /** null: no default arm (an unknown discriminant is an error) */
      readonly defaultArm: Decl | null;
      readonly loc: Loc;
    }
  | { readonly kind: 'typedef'; readonly name: string; readonly decl: NamedDecl; readonly loc: Loc }
  /** `%...` lines: C passthrough, kept in the AST, not emitted */
  | { readonly kind: 'passthrough'; readonly text: string; readonly loc: Loc };

export type TypeDefinition = Extract<Definition, { kind: 'enum' | 'struct' | 'union' | 'typedef' }>;

export interface XFile {
  readonly file: string;
  readonly definitions: readonly Definition[];
}
