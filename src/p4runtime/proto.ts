/**
 * The P4Runtime v1 messages this client uses, written from the P4Runtime
 * specification (p4.v1, p4.config.v1) plus the two Google messages they
 * carry (google.rpc.Status, google.protobuf.Any). Field numbers are the
 * specification's; messages and fields we never send or read are left out
 * (a proto3 decoder skips unknown fields, so answers that carry them still
 * decode). The .proto text below is the only definition: it is parsed at load
 * time by protobufjs, with the .proto field names kept (snake_case).
 *
 * The interfaces below describe the plain objects we hand to and get back
 * from protobufjs (`fromObject` / `toObject` with the options in `decode`):
 * 64-bit integers travel as decimal strings, bytes as Buffers.
 */
import protobuf from 'protobufjs';

export const GOOGLE_PROTO = `
syntax = "proto3";

package google.protobuf;

message Any {
  string type_url = 1;
  bytes value = 2;
}
`;

export const GOOGLE_RPC_PROTO = `
syntax = "proto3";

package google.rpc;

message Status {
  int32 code = 1;
  string message = 2;
  repeated google.protobuf.Any details = 3;
}
`;

/** p4.config.v1: the parts of P4Info that p4c emits for a v1model program like ours. */
export const P4INFO_PROTO = `
syntax = "proto3";

package p4.config.v1;

message P4Info {
  PkgInfo pkg_info = 1;
  repeated Table tables = 2;
  repeated Action actions = 3;
  repeated Counter counters = 5;
  repeated ControllerPacketMetadata controller_packet_metadata = 9;
  P4TypeInfo type_info = 200;
}

// p4c always writes type_info; for programs without user-defined types
// (ours) it is empty. Its contents are not declared here: a P4Info that has
// some reports them in P4Info.unknownFields.
message P4TypeInfo {
}

message Documentation {
  string brief = 1;
  string description = 2;
}

message PkgInfo {
  string name = 1;
  string version = 2;
  Documentation doc = 3;
  repeated string annotations = 4;
  string arch = 5;
  string organization = 6;
  string contact = 7;
  string url = 8;
}

message Preamble {
  uint32 id = 1;
  string name = 2;
  string alias = 3;
  repeated string annotations = 4;
  Documentation doc = 5;
}

message MatchField {
  uint32 id = 1;
  string name = 2;
  repeated string annotations = 3;
  int32 bitwidth = 4;
  enum MatchType {
    UNSPECIFIED = 0;
    EXACT = 2;
    LPM = 3;
    TERNARY = 4;
    RANGE = 5;
    OPTIONAL = 6;
  }
  oneof match {
    MatchType match_type = 5;
    string other_match_type = 7;
  }
  Documentation doc = 6;
}

message Table {
  Preamble preamble = 1;
  repeated MatchField match_fields = 2;
  repeated ActionRef action_refs = 3;
  uint32 const_default_action_id = 4;
  uint32 implementation_id = 6;
  repeated uint32 direct_resource_ids = 7;
  int64 size = 8;
  enum IdleTimeoutBehavior {
    NO_TIMEOUT = 0;
    NOTIFY_CONTROL = 1;
  }
  IdleTimeoutBehavior idle_timeout_behavior = 9;
  bool is_const_table = 10;
  bool has_initial_entries = 11;
}

message ActionRef {
  uint32 id = 1;
  repeated string annotations = 2;
  enum Scope {
    TABLE_AND_DEFAULT = 0;
    TABLE_ONLY = 1;
    DEFAULT_ONLY = 2;
  }
  Scope scope = 3;
}

message Action {
  Preamble preamble = 1;
  message Param {
    uint32 id = 1;
    string name = 2;
    repeated string annotations = 3;
    int32 bitwidth = 4;
    Documentation doc = 5;
  }
  repeated Param params = 2;
}

message CounterSpec {
  enum Unit {
    UNSPECIFIED = 0;
    BYTES = 1;
    PACKETS = 2;
    BOTH = 3;
  }
  Unit unit = 1;
}

message Counter {
  Preamble preamble = 1;
  CounterSpec spec = 2;
  int64 size = 3;
}

message ControllerPacketMetadata {
  Preamble preamble = 1;
  message Metadata {
    uint32 id = 1;
    string name = 2;
    repeated string annotations = 3;
    int32 bitwidth = 4;
  }
  repeated Metadata metadata = 2;
}
`;

/** p4.v1: the P4Runtime service and the messages of the calls we make. */
export const P4RUNTIME_PROTO = `
syntax = "proto3";

package p4.v1;

service P4Runtime {
  rpc Write(WriteRequest) returns (WriteResponse);
  rpc Read(ReadRequest) returns (stream ReadResponse);
  rpc SetForwardingPipelineConfig(SetForwardingPipelineConfigRequest) returns (SetForwardingPipelineConfigResponse);
  rpc GetForwardingPipelineConfig(GetForwardingPipelineConfigRequest) returns (GetForwardingPipelineConfigResponse);
  rpc StreamChannel(stream StreamMessageRequest) returns (stream StreamMessageResponse);
  rpc Capabilities(CapabilitiesRequest) returns (CapabilitiesResponse);
}

message Uint128 {
  uint64 high = 1;
  uint64 low = 2;
}

message WriteRequest {
  uint64 device_id = 1;
  uint64 role_id = 2;  // deprecated
  Uint128 election_id = 3;
  repeated Update updates = 4;
  enum Atomicity {
    CONTINUE_ON_ERROR = 0;
    ROLLBACK_ON_ERROR = 1;
    DATAPLANE_ATOMIC = 2;
  }
  Atomicity atomicity = 5;
  string role = 6;
}

message WriteResponse {
}

message ReadRequest {
  uint64 device_id = 1;
  repeated Entity entities = 2;
  string role = 3;
}

message ReadResponse {
  repeated Entity entities = 1;
}

message Update {
  enum Type {
    UNSPECIFIED = 0;
    INSERT = 1;
    MODIFY = 2;
    DELETE = 3;
  }
  Type type = 1;
  Entity entity = 2;
}

message Entity {
  oneof entity {
    TableEntry table_entry = 2;
    CounterEntry counter_entry = 7;
  }
}

message TableEntry {
  uint32 table_id = 1;
  repeated FieldMatch match = 2;
  TableAction action = 3;
  int32 priority = 4;
  uint64 controller_metadata = 5;  // deprecated
  CounterData counter_data = 7;
  bool is_default_action = 8;
  int64 idle_timeout_ns = 9;
  bytes metadata = 11;
  bool is_const = 13;
}

message FieldMatch {
  uint32 field_id = 1;
  message Exact {
    bytes value = 1;
  }
  message Ternary {
    bytes value = 1;
    bytes mask = 2;
  }
  message LPM {
    bytes value = 1;
    int32 prefix_len = 2;
  }
  message Range {
    bytes low = 1;
    bytes high = 2;
  }
  message Optional {
    bytes value = 1;
  }
  oneof field_match_type {
    Exact exact = 2;
    Ternary ternary = 3;
    LPM lpm = 4;
    Range range = 6;
    Optional optional = 7;
  }
}

message TableAction {
  oneof type {
    Action action = 1;
    uint32 action_profile_member_id = 2;
    uint32 action_profile_group_id = 3;
  }
}

message Action {
  uint32 action_id = 1;
  message Param {
    uint32 param_id = 2;
    bytes value = 3;
  }
  repeated Param params = 4;
}

message Index {
  int64 index = 1;
}

message CounterEntry {
  uint32 counter_id = 1;
  Index index = 2;
  CounterData data = 3;
}

message CounterData {
  int64 byte_count = 1;
  int64 packet_count = 2;
}

message StreamMessageRequest {
  oneof update {
    MasterArbitrationUpdate arbitration = 1;
    PacketOut packet = 2;
  }
}

message StreamMessageResponse {
  oneof update {
    MasterArbitrationUpdate arbitration = 1;
    PacketIn packet = 2;
    StreamError error = 6;
  }
}

message PacketOut {
  bytes payload = 1;
  repeated PacketMetadata metadata = 2;
}

message PacketIn {
  bytes payload = 1;
  repeated PacketMetadata metadata = 2;
}

message PacketMetadata {
  uint32 metadata_id = 1;
  bytes value = 2;
}

message Role {
  uint64 id = 1;  // deprecated
  google.protobuf.Any config = 2;
  string name = 3;
}

message MasterArbitrationUpdate {
  uint64 device_id = 1;
  Role role = 2;
  Uint128 election_id = 3;
  google.rpc.Status status = 4;
}

message StreamError {
  int32 canonical_code = 1;
  string message = 2;
  string space = 3;
  int32 code = 4;
  oneof details {
    PacketOutError packet_out = 5;
  }
}

message PacketOutError {
  PacketOut packet_out = 1;
}

message SetForwardingPipelineConfigRequest {
  enum Action {
    UNSPECIFIED = 0;
    VERIFY = 1;
    VERIFY_AND_SAVE = 2;
    VERIFY_AND_COMMIT = 3;
    COMMIT = 4;
    RECONCILE_AND_COMMIT = 5;
  }
  uint64 device_id = 1;
  uint64 role_id = 2;  // deprecated
  Uint128 election_id = 3;
  Action action = 4;
  ForwardingPipelineConfig config = 5;
  string role = 6;
}

message SetForwardingPipelineConfigResponse {
}

message ForwardingPipelineConfig {
  p4.config.v1.P4Info p4info = 1;
  bytes p4_device_config = 2;
  message Cookie {
    uint64 cookie = 1;
  }
  Cookie cookie = 3;
}

message GetForwardingPipelineConfigRequest {
  enum ResponseType {
    ALL = 0;
    COOKIE_ONLY = 1;
    P4INFO_AND_COOKIE = 2;
    DEVICE_CONFIG_AND_COOKIE = 3;
  }
  uint64 device_id = 1;
  ResponseType response_type = 2;
}

message GetForwardingPipelineConfigResponse {
  ForwardingPipelineConfig config = 1;
}

message CapabilitiesRequest {
}

message CapabilitiesResponse {
  string p4runtime_api_version = 1;
}

// One per update of a failed Write, in the details of the google.rpc.Status.
message Error {
  int32 canonical_code = 1;
  string message = 2;
  string space = 3;
  int32 code = 4;
  google.protobuf.Any details = 5;
}
`;

export const P4RUNTIME_SERVICE = 'p4.v1.P4Runtime';
export const P4_ERROR_TYPE_URL = 'type.googleapis.com/p4.v1.Error';

const root = new protobuf.Root();
for (const text of [GOOGLE_PROTO, GOOGLE_RPC_PROTO, P4INFO_PROTO, P4RUNTIME_PROTO]) protobuf.parse(text, root, { keepCase: true });
root.resolveAll();

/** The message types by full name (only those declared above). */
export type MessageName =
  | 'google.protobuf.Any'
  | 'google.rpc.Status'
  | 'p4.config.v1.P4Info'
  | 'p4.v1.WriteRequest'
  | 'p4.v1.WriteResponse'
  | 'p4.v1.ReadRequest'
  | 'p4.v1.ReadResponse'
  | 'p4.v1.Update'
  | 'p4.v1.Entity'
  | 'p4.v1.TableEntry'
  | 'p4.v1.CounterEntry'
  | 'p4.v1.StreamMessageRequest'
  | 'p4.v1.StreamMessageResponse'
  | 'p4.v1.MasterArbitrationUpdate'
  | 'p4.v1.Uint128'
  | 'p4.v1.SetForwardingPipelineConfigRequest'
  | 'p4.v1.SetForwardingPipelineConfigResponse'
  | 'p4.v1.GetForwardingPipelineConfigRequest'
  | 'p4.v1.GetForwardingPipelineConfigResponse'
  | 'p4.v1.CapabilitiesRequest'
  | 'p4.v1.CapabilitiesResponse'
  | 'p4.v1.Error';

// ------------------------------------------------------------ wire shapes

/** uint64 / int64 on the wire: a decimal string (what `toObject` gives with longs: String). */
export type Int64 = string;

export interface AnyMsg {
  type_url?: string;
  value?: Buffer;
}
export interface StatusMsg {
  code?: number;
  message?: string;
  details?: AnyMsg[];
}
export interface Uint128Msg {
  high?: Int64;
  low?: Int64;
}

export interface FieldMatchMsg {
  field_id: number;
  exact?: { value: Buffer };
  ternary?: { value: Buffer; mask: Buffer };
  lpm?: { value: Buffer; prefix_len: number };
  range?: { low: Buffer; high: Buffer };
  optional?: { value: Buffer };
}
export interface ActionMsg {
  action_id: number;
  params?: { param_id: number; value: Buffer }[];
}
export interface TableEntryMsg {
  table_id: number;
  match?: FieldMatchMsg[];
  action?: { action?: ActionMsg; action_profile_member_id?: number; action_profile_group_id?: number };
  priority?: number;
  is_default_action?: boolean;
  is_const?: boolean;
  metadata?: Buffer;
}
export interface CounterDataMsg {
  byte_count?: Int64;
  packet_count?: Int64;
}
export interface CounterEntryMsg {
  counter_id: number;
  index?: { index?: Int64 };
  data?: CounterDataMsg;
}
export interface EntityMsg {
  table_entry?: TableEntryMsg;
  counter_entry?: CounterEntryMsg;
}
export type UpdateType = 'INSERT' | 'MODIFY' | 'DELETE';
export interface UpdateMsg {
  type: UpdateType;
  entity: EntityMsg;
}
export interface WriteRequestMsg {
  device_id: Int64;
  election_id: Uint128Msg;
  updates: UpdateMsg[];
  atomicity?: 'CONTINUE_ON_ERROR' | 'ROLLBACK_ON_ERROR' | 'DATAPLANE_ATOMIC';
  role?: string;
}
export interface ReadRequestMsg {
  device_id: Int64;
  entities: EntityMsg[];
  role?: string;
}
export interface ReadResponseMsg {
  entities?: EntityMsg[];
}
export interface PacketMetadataMsg {
  metadata_id: number;
  value: Buffer;
}
export interface PacketMsg {
  payload?: Buffer;
  metadata?: PacketMetadataMsg[];
}
export interface MasterArbitrationUpdateMsg {
  device_id?: Int64;
  role?: { name?: string };
  election_id?: Uint128Msg;
  status?: StatusMsg;
}
export interface StreamErrorMsg {
  canonical_code?: number;
  message?: string;
  space?: string;
  code?: number;
  packet_out?: { packet_out?: PacketMsg };
}
export interface StreamMessageRequestMsg {
  arbitration?: MasterArbitrationUpdateMsg;
  packet?: PacketMsg;
}
export interface StreamMessageResponseMsg {
  arbitration?: MasterArbitrationUpdateMsg;
  packet?: PacketMsg;
  error?: StreamErrorMsg;
}
/** p4.config.v1.P4Info as a plain object (snake_case field names, see P4Info.toMessage). */
export type P4InfoMsg = Record<string, unknown>;
export interface ForwardingPipelineConfigMsg {
  p4info?: P4InfoMsg;
  p4_device_config?: Buffer;
  cookie?: { cookie?: Int64 };
}
export interface SetForwardingPipelineConfigRequestMsg {
  device_id: Int64;
  election_id: Uint128Msg;
  action: 'VERIFY' | 'VERIFY_AND_SAVE' | 'VERIFY_AND_COMMIT' | 'COMMIT' | 'RECONCILE_AND_COMMIT';
  config: ForwardingPipelineConfigMsg;
  role?: string;
}
export interface GetForwardingPipelineConfigRequestMsg {
  device_id: Int64;
  response_type?: 'ALL' | 'COOKIE_ONLY' | 'P4INFO_AND_COOKIE' | 'DEVICE_CONFIG_AND_COOKIE';
}
export interface GetForwardingPipelineConfigResponseMsg {
  config?: ForwardingPipelineConfigMsg;
}
export interface CapabilitiesResponseMsg {
  p4runtime_api_version?: string;
}
export interface P4ErrorMsg {
  canonical_code?: number;
  message?: string;
  space?: string;
  code?: number;
}
export type EmptyMsg = Record<string, never>;

// ------------------------------------------------------------ encoding

const types = new Map<MessageName, protobuf.Type>();
/** The protobufjs reflection type of a message. */
export function messageType(name: MessageName): protobuf.Type {
  let t = types.get(name);
  if (!t) {
    t = root.lookupType(name);
    types.set(name, t);
  }
  return t;
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: String };

function toBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/**
 * Encodes a plain object as the named message. `fromObject` converts what it
 * can (decimal strings to 64-bit integers, enum names to numbers) and
 * ignores fields the message does not have; `verify` first rejects values
 * of the wrong type.
 */
export function encode(name: MessageName, value: object): Buffer {
  const t = messageType(name);
  const msg = t.fromObject(value as Record<string, unknown>);
  const problem = t.verify(msg);
  if (problem) throw new TypeError(`${name}: ${problem}`);
  stripDefaults(t, msg as unknown as Record<string, unknown>);
  return toBuffer(t.encode(msg).finish());
}

function isDefault(v: unknown): boolean {
  if (v === 0 || v === '' || v === false) return true;
  if (v instanceof Uint8Array) return v.length === 0;
  if (v !== null && typeof v === 'object' && 'low' in v && 'high' in v) return (v as { low: number; high: number }).low === 0 && (v as { low: number; high: number }).high === 0; // Long
  return false;
}

// protobufjs writes every field present in the object, also a proto3 scalar
// at its default value (e.g. Uint128.high = 0); proto3 leaves those out.
// Drop them so we send the canonical encoding (members of a oneof stay: for
// them, being set is the information).
function stripDefaults(t: protobuf.Type, msg: Record<string, unknown>): void {
  for (const f of t.fieldsArray) {
    const v = msg[f.name];
    if (v === undefined || v === null) continue;
    f.resolve();
    if (f.resolvedType instanceof protobuf.Type) {
      const sub = f.resolvedType;
      if (Array.isArray(v)) for (const x of v) stripDefaults(sub, x as Record<string, unknown>);
      else stripDefaults(sub, v as Record<string, unknown>);
    } else if (!f.repeated && !f.partOf && isDefault(v)) {
      delete msg[f.name];
    }
  }
}

/**
 * Decodes the named message into a plain object: 64-bit integers as decimal
 * strings, enums by name, bytes as Buffers, unset fields absent (a set oneof
 * member is present).
 */
export function decode<T>(name: MessageName, bytes: Uint8Array): T {
  const t = messageType(name);
  return fixBytes(t.toObject(t.decode(bytes), TO_OBJECT)) as T;
}

/** Converts a plain object to the named message and back, as the wire would (for P4Info). */
export function normalize<T>(name: MessageName, value: object): T {
  return decode<T>(name, encode(name, value));
}

// protobufjs gives bytes as Uint8Array slices (Buffer subarrays in Node, but
// typed as Uint8Array): make them Buffers throughout.
function fixBytes(v: unknown): unknown {
  if (v instanceof Uint8Array) return toBuffer(v);
  if (Array.isArray(v)) return v.map(fixBytes);
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) o[k] = fixBytes(o[k]);
    return o;
  }
  return v;
}

export interface Codec<T> {
  serialize(v: T): Buffer;
  deserialize(b: Buffer): T;
}

export function codec<T extends object>(name: MessageName): Codec<T> {
  return {
    serialize: (v: T): Buffer => encode(name, v),
    deserialize: (b: Buffer): T => decode<T>(name, b),
  };
}
