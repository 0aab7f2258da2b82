/**
 * Objects that hold one secret string (a private key, user-data with one):
 * the secret property is non-enumerable — serializers that ignore toJSON
 * (pino with wildcard redaction does) never see it — and toJSON /
 * util.inspect show it as '[redacted]', at any depth. Spreading such an
 * object drops the secret.
 */
import { inspect } from 'node:util';

export const REDACTED = '[redacted]';

/** A frozen copy of `visible` plus the hidden `key: secret`. */
export function withSecret<T extends Record<string, unknown>, K extends string>(visible: T, key: K, secret: string): Readonly<T & Record<K, string>> {
  const obj = { ...visible } as T & Record<K, string>;
  Object.defineProperty(obj, key, { value: secret, enumerable: false });
  const safe = (): Record<string, unknown> => ({ ...visible, [key]: REDACTED });
  Object.defineProperty(obj, 'toJSON', { value: safe, enumerable: false });
  Object.defineProperty(obj, inspect.custom, { value: () => safe(), enumerable: false });
  return Object.freeze(obj);
}
