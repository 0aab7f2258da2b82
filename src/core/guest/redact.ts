/**
 * Objects that hold secrets (a private key, user-data with one, seed files
 * with one): each secret property is non-enumerable — serializers that ignore
 * toJSON (pino with wildcard redaction does) never see it — and toJSON /
 * util.inspect show it as '[redacted]', at any depth. Spreading such an
 * object drops the secrets.
 */
import { inspect } from 'node:util';

export const REDACTED = '[redacted]';

/** A frozen copy of `visible` plus the hidden properties of `secrets`. */
export function withSecrets<T extends Record<string, unknown>, S extends Record<string, unknown>>(visible: T, secrets: S): Readonly<T & S> {
  const obj = { ...visible } as T & S;
  for (const [key, value] of Object.entries(secrets)) Object.defineProperty(obj, key, { value, enumerable: false });
  const safe = (): Record<string, unknown> => ({ ...visible, ...Object.fromEntries(Object.keys(secrets).map((k) => [k, REDACTED])) });
  Object.defineProperty(obj, 'toJSON', { value: safe, enumerable: false });
  Object.defineProperty(obj, inspect.custom, { value: () => safe(), enumerable: false });
  return Object.freeze(obj);
}

/** A frozen copy of `visible` plus the hidden `key: secret`. */
export function withSecret<T extends Record<string, unknown>, K extends string>(visible: T, key: K, secret: string): Readonly<T & Record<K, string>> {
  return withSecrets(visible, { [key]: secret } as Record<K, string>);
}
