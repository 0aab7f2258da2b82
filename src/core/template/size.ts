/** Sizes in templates and flags: "2GiB", "512M", numbers in a default unit; exact (BigInt). */
import { SIZE_RE } from './schema.js';

const UNIT_BYTES: Record<string, bigint> = { m: 1024n ** 2n, g: 1024n ** 3n, t: 1024n ** 4n };
export const MIB = 1024n ** 2n;

/**
 * Bytes of a size: a number in `defaultUnit`, or a string like "2GiB", "512M",
 * "1.5 GB" (binary units whatever the spelling). null if not a size.
 * Exact (BigInt) so "1.1GiB" is known not to be a whole number of MiB.
 */
export function parseSize(value: unknown, defaultUnit: 'MiB' | 'GiB'): { bytes: bigint; whole: boolean } | null {
  let intPart: string;
  let frac = '';
  let unit: string;
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) return null;
    const m = /^([0-9]+)(?:\.([0-9]+))?$/.exec(String(value));
    if (!m) return null;
    intPart = m[1]!;
    frac = m[2] ?? '';
    unit = defaultUnit[0]!.toLowerCase();
  } else if (typeof value === 'string') {
    const m = SIZE_RE.exec(value);
    if (!m) return null;
    const [whole = '0', fraction = ''] = m[1]!.split('.');
    intPart = whole;
    frac = fraction;
    unit = (m[2] ?? defaultUnit[0]!).toLowerCase();
  } else return null;
  const mult = UNIT_BYTES[unit]!;
  const scale = 10n ** BigInt(frac.length);
  const numerator = (BigInt(intPart) * scale + BigInt(frac === '' ? '0' : frac)) * mult;
  return { bytes: numerator / scale, whole: numerator % scale === 0n };
}

export function formatBytesExact(bytes: bigint): string {
  for (const [u, n] of [['TiB', 1024n ** 4n], ['GiB', 1024n ** 3n], ['MiB', MIB]] as const) {
    if (bytes >= n && bytes % n === 0n) return `${bytes / n} ${u}`;
  }
  return `${bytes} bytes`;
}
