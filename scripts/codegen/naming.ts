/** Name mapping from .x / C identifiers to TypeScript identifiers. */

const cap = (s: string): string => (s === '' ? s : (s[0] as string).toUpperCase() + s.slice(1));

/**
 * Type names: PascalCase with a leading `remote_` stripped.
 *   remote_nonnull_domain → NonnullDomain, qemu_domain_attach_args → QemuDomainAttachArgs,
 *   virNetMessageHeader → VirNetMessageHeader
 */
export function typeName(xName: string): string {
  const base = xName.startsWith('remote_') ? xName.slice('remote_'.length) : xName;
  return base
    .split('_')
    .filter((p) => p !== '')
    .map(cap)
    .join('');
}

/** Field names: camelCase (`need_results` → `needResults`, `maxMem` stays). */
export function fieldName(xName: string): string {
  const parts = xName.split('_').filter((p) => p !== '');
  if (parts.length === 0) return xName;
  return (parts[0] as string) + parts.slice(1).map(cap).join('');
}

/** Procedure method names: `DOMAIN_LOOKUP_BY_NAME` → `domainLookupByName`. */
export function methodName(procSuffix: string): string {
  const parts = procSuffix
    .toLowerCase()
    .split('_')
    .filter((p) => p !== '');
  return (parts[0] ?? '') + parts.slice(1).map(cap).join('');
}

/** C typedef names: `virDomainState` → `VirDomainState`. */
export function cTypeName(cName: string): string {
  return typeName(cName);
}

/** gendispatch.pl's matching key: lower case, underscores removed. */
export function dispatchKey(s: string): string {
  return s.toLowerCase().replace(/_/g, '');
}

const TS_RESERVED = new Set(
  (
    'break case catch class const continue debugger default delete do else enum export extends false finally for ' +
    'function if import in instanceof new null return super switch this throw true try typeof var void while with ' +
    'implements interface let package private protected public static yield await'
  ).split(' '),
);

export function isReservedWord(s: string): boolean {
  return TS_RESERVED.has(s);
}
