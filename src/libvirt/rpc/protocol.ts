/**
 * The generated protocol pieces the RPC core uses, gathered in one place so
 * that a rename in the generator touches only this file.
 */
export {
  VIR_NET_MESSAGE_HEADER_MAX,
  VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX,
  VIR_NET_MESSAGE_LEN_MAX,
  VIR_NET_MESSAGE_MAX,
  VIR_NET_MESSAGE_PAYLOAD_MAX,
  VirNetMessageStatus,
  VirNetMessageType,
  decodeVirNetMessageError,
  decodeVirNetMessageHeader,
  decodeVirNetStreamHole,
  encodeVirNetMessageError,
  encodeVirNetMessageHeader,
  encodeVirNetStreamHole,
} from '../generated/virnet.gen.js';
export type { VirNetMessageError, VirNetMessageHeader, VirNetStreamHole } from '../generated/virnet.gen.js';

export { KEEPALIVE_PROGRAM, KEEPALIVE_PROTOCOL_VERSION, KeepaliveProcedure } from '../generated/keepalive.gen.js';

export {
  AuthType,
  Procedure,
  REMOTE_EVENTS,
  REMOTE_PROC_CONNECT_CLOSE_SPEC,
  REMOTE_PROGRAM,
  REMOTE_PROTOCOL_VERSION,
} from '../generated/remote.gen.js';
export { QEMU_EVENTS, QEMU_PROGRAM } from '../generated/qemu.gen.js';

export { VirDrvFeature, VirErrorDomain, VirErrorLevel, VirErrorNumber } from '../generated/constants.gen.js';
