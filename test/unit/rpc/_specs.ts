/** Hand-made procedure specs for fake-server tests (the real ones are generated). */
import { xdr } from '../../../src/libvirt/xdr/index.js';
import type { ProcedureSpec } from '../../../src/libvirt/rpc/caller.js';
import { REMOTE_PROGRAM, REMOTE_PROTOCOL_VERSION } from '../../../src/libvirt/rpc/protocol.js';

const base = { program: REMOTE_PROGRAM, version: REMOTE_PROTOCOL_VERSION } as const;

/** int in, int out */
export const ECHO: ProcedureSpec<number, number> = {
  ...base,
  name: 'TEST_PROC_ECHO',
  procedure: 9001,
  encodeArgs: xdr.encInt,
  decodeRet: xdr.decInt,
};

/** void in, void out */
export const PING: ProcedureSpec<void, void> = {
  ...base,
  name: 'TEST_PROC_VOID',
  procedure: 9002,
  encodeArgs: null,
  decodeRet: null,
};

export const DOWNLOAD: ProcedureSpec<void, void> = {
  ...base,
  name: 'TEST_PROC_DOWNLOAD',
  procedure: 9003,
  encodeArgs: null,
  decodeRet: null,
  stream: 'read',
};

export const UPLOAD: ProcedureSpec<void, void> = {
  ...base,
  name: 'TEST_PROC_UPLOAD',
  procedure: 9004,
  encodeArgs: null,
  decodeRet: null,
  stream: 'write',
};

export const CONSOLE: ProcedureSpec<void, void> = {
  ...base,
  name: 'TEST_PROC_CONSOLE',
  procedure: 9005,
  encodeArgs: null,
  decodeRet: null,
  stream: 'both',
};
