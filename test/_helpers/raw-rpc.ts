/**
 * A hand-framed libvirt RPC call for transport tests: proves bytes reach a
 * real daemon without depending on the RPC client or generated code.
 */
import type { Duplex } from 'node:stream';

export const REMOTE_PROGRAM = 0x20008086;
export const REMOTE_PROC_AUTH_LIST = 66;

export interface RawReplyHeader {
  len: number;
  program: number;
  version: number;
  procedure: number;
  type: number;
  serial: number;
  status: number;
}

/** Frame REMOTE_PROC_AUTH_LIST by hand and read the reply header. */
export async function authList(stream: Duplex): Promise<RawReplyHeader> {
  const call = Buffer.alloc(28);
  call.writeUInt32BE(28, 0);
  call.writeUInt32BE(REMOTE_PROGRAM, 4);
  call.writeUInt32BE(1, 8);
  call.writeInt32BE(REMOTE_PROC_AUTH_LIST, 12);
  call.writeInt32BE(0, 16); // VIR_NET_CALL
  call.writeUInt32BE(1, 20); // serial
  call.writeInt32BE(0, 24); // VIR_NET_OK
  stream.write(call);
  let buf = Buffer.alloc(0);
  const reply = await new Promise<Buffer>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 4 && buf.length >= buf.readUInt32BE(0)) {
        stream.off('data', onData);
        resolve(buf);
      }
    };
    stream.on('data', onData);
    stream.once('error', reject);
    stream.once('close', () => reject(new Error(`stream closed after ${buf.length} bytes`)));
  });
  return {
    len: reply.readUInt32BE(0),
    program: reply.readUInt32BE(4),
    version: reply.readUInt32BE(8),
    procedure: reply.readInt32BE(12),
    type: reply.readInt32BE(16),
    serial: reply.readUInt32BE(20),
    status: reply.readInt32BE(24),
  };
}

