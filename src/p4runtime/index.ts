/**
 * P4Runtime v1 client: P4Info resolution, entity encoding checked against the
 * P4Info, and a client for one device (arbitration, pipeline, tables,
 * counters, packet I/O).
 */
export { P4RuntimeClient, decodeWriteErrorDetails, uint128, fromUint128 } from './client.js';
export type { P4RuntimeClientOptions, P4RuntimeTlsOptions, P4RuntimeClientEvents, PacketIn, PrimacyLost, P4Update, WriteOptions } from './client.js';
export { P4Info, P4InfoObjects } from './p4info.js';
export type { MatchType, ActionScope, CounterUnit, Preamble, MatchFieldInfo, ActionRefInfo, TableInfo, ActionParamInfo, ActionInfo, CounterInfo, PacketMetadataFieldInfo, ControllerPacketMetadataInfo } from './p4info.js';
export { bytestring, canonicalBytes, bytestringToBigInt, toBigInt, tableEntry, decodeTableEntry, encodeAction, counterEntry, decodeCounterData, packetMetadata, decodePacketMetadata } from './encode.js';
export type { P4Value, MatchSpec, ActionSpec, TableEntrySpec, DecodedMatch, DecodedTableEntry, CounterValue } from './encode.js';
export { P4InfoError, P4EncodingError, P4RuntimeError, P4RuntimeWriteError, P4RuntimeNotPrimaryError, P4RuntimeUnavailableError, P4RuntimeSecurityError, P4RuntimeCertificateRefusedError, P4RuntimeUntrustedServerError, P4RuntimeServerIdentityError, P4RuntimeTransportMismatchError, codeName } from './errors.js';
export type { P4RuntimeTlsParties } from './errors.js';
export type { FailedUpdate } from './errors.js';
export { encode as encodeMessage, decode as decodeMessage, P4RUNTIME_PROTO, P4INFO_PROTO, GOOGLE_RPC_PROTO, GOOGLE_PROTO, P4RUNTIME_SERVICE, P4_ERROR_TYPE_URL } from './proto.js';
export type { MessageName } from './proto.js';
