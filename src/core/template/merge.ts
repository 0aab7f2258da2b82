/** `extends` merge: mappings merge key by key (child wins), lists replace, null deletes, differing `type` replaces. */
import { isPlainObject } from './problems.js';

/** Deep merge for extends: mappings merge, lists replace, null deletes, differing `type` replaces. */
export function mergeTemplates(parent: Record<string, unknown>, child: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = structuredClone(parent);
  for (const [k, v] of Object.entries(child)) {
    if (v === null) {
      delete out[k];
      continue;
    }
    const base = out[k];
    if (isPlainObject(base) && isPlainObject(v) && !('type' in base && 'type' in v && base.type !== v.type)) {
      out[k] = mergeTemplates(base, v);
    } else {
      out[k] = structuredClone(v);
    }
  }
  return out;
}
