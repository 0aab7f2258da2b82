/** libvirt typed parameters → plain record (src/libvirt/objects/jobs.ts). */
import { describe, expect, it } from 'vitest';
import { typedParamsToRecord } from '../../src/libvirt/connection.js';

describe('typedParamsToRecord', () => {
  it('keeps each type: int/uint/double as numbers, llong/ullong as bigint, boolean, string', () => {
    expect(
      typedParamsToRecord([
        { field: 'operation', value: { type: 1, i: -5 } },
        { field: 'memory_iteration', value: { type: 2, ui: 7 } },
        { field: 'time_elapsed', value: { type: 3, l: -9n } },
        { field: 'data_total', value: { type: 4, ul: 18446744073709551615n } },
        { field: 'compression_ratio', value: { type: 5, d: 0.5 } },
        { field: 'auto_converge', value: { type: 6, b: 1 } },
        { field: 'postcopy', value: { type: 6, b: 0 } },
        { field: 'errmsg', value: { type: 7, s: 'no space' } },
      ]),
    ).toEqual({
      operation: -5,
      memory_iteration: 7,
      time_elapsed: -9n,
      data_total: 18446744073709551615n,
      compression_ratio: 0.5,
      auto_converge: true,
      postcopy: false,
      errmsg: 'no space',
    });
    expect(typedParamsToRecord([])).toEqual({});
  });
});
