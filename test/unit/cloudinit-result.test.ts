/** The fast path of waitForCloudInit: cloud-init's result.json read after the shell waited for it. */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { CLOUD_INIT_RESULT_WAIT, parseCloudInitResult } from '../../src/core/guest/ssh.js';

const MARK = 'vmctl-cloud-init-result\n';

describe('parseCloudInitResult', () => {
  it('takes a result without errors as done, naming the datasource as cloud-init status does', () => {
    const r = parseCloudInitResult(`${MARK}{"v1": {"datasource": "DataSourceNoCloud [seed=/dev/sr0][dsmode=net]", "errors": []}}\n`);
    expect(r).toEqual({ status: 'done', errors: [], detail: '', datasource: 'nocloud', exitCode: 0 });
  });
  it('leaves errors, no result and odd shapes to cloud-init status', () => {
    expect(parseCloudInitResult(`${MARK}{"v1": {"datasource": "DataSourceNoCloud", "errors": ["boom"]}}`)).toBeUndefined();
    expect(parseCloudInitResult('')).toBeUndefined();
    expect(parseCloudInitResult(`${MARK}not json`)).toBeUndefined();
    expect(parseCloudInitResult(`${MARK}{"v2": {}}`)).toBeUndefined();
    expect(parseCloudInitResult(`${MARK}{"v1": {"errors": "x"}}`)).toBeUndefined();
  });
  it('the wait is valid sh', () => {
    expect(execFileSync('sh', ['-n', '-c', CLOUD_INIT_RESULT_WAIT]).toString()).toBe('');
  });
});
