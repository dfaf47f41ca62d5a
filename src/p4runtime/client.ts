/**
 * A P4Runtime v1 client for one device: arbitration on the stream channel,
 * the forwarding pipeline, table entries, indirect counters and packet I/O,
 * all by P4Info names.
 *
 *   const c = await P4RuntimeClient.connect({ address: 'unix:/run/x.grpc', deviceId: 1 });
 *   await c.setPipeline(P4Info.load('sharp.p4info.json'), readFileSync('sharp.json'));
 *   await c.insertEntry({ table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_tx', params: { port: 1 } } });
 *   c.close();
 *
 * Arbitration: connect() opens the stream channel and sends
 * MasterArbitrationUpdate(device_id, election_id); it resolves once the server
 * says this client is the primary and rejects with P4RuntimeNotPrimaryError
 * otherwise. When a client with a higher election id takes over, this client
 * emits 'primacy-lost' and its writes fail at once with
 * P4RuntimeNotPrimaryError (the server would refuse them anyway).
 *
 * Events: 'packet-in', 'primacy-lost', 'primacy-gained', 'error' (stream
 * errors; only emitted while someone listens, so an unobserved stream error
 * never crashes the process — it is kept in `lastError`), 'close'.
 *
 * Transport: plaintext unless `tls` is given; with it, TLS with the server's
 * certificate checked against `tls.ca` and a name (`tls.serverName`, else
 * the address's host), presenting `tls.cert` when the server asks for
 * client certificates (simple_switch_grpc --grpc-server-with-client-auth).
 * A connection refused for its security fails with a P4RuntimeSecurityError
 * subclass naming the address, both identities and the cause.
 *
 * Debug tracing: SHARP_DEBUG=p4runtime.
 */
import { EventEmitter } from 'node:events';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import {
  codeName,
  P4RuntimeCertificateRefusedError,
  P4RuntimeError,
  P4RuntimeNotPrimaryError,
  P4RuntimeServerIdentityError,
  P4RuntimeTransportMismatchError,
  P4RuntimeUnavailableError,
  P4RuntimeUntrustedServerError,
  P4RuntimeWriteError,
  type FailedUpdate,
  type P4RuntimeTlsParties,
} from './errors.js';
import { identityOf, serverNames } from '../node/transport/identity.js';
import { connectionReason } from '../node/transport/errors.js';
import { NOT_TLS, REFUSED_BY_PEER, UNREACHABLE, UNTRUSTED } from '../net/tls-failure.js';
import { bytestringToBigInt, counterEntry, decodeCounterData, decodePacketMetadata, decodeTableEntry, packetMetadata, tableEntry, type CounterValue, type DecodedTableEntry, type P4Value, type TableEntrySpec } from './encode.js';
import { P4Info } from './p4info.js';
import {
  codec,
  decode,
  P4_ERROR_TYPE_URL,
  P4RUNTIME_SERVICE,
  type CapabilitiesResponseMsg,
  type Codec,
  type EmptyMsg,
  type EntityMsg,
  type GetForwardingPipelineConfigRequestMsg,
  type GetForwardingPipelineConfigResponseMsg,
  type MasterArbitrationUpdateMsg,
  type P4ErrorMsg,
  type ReadRequestMsg,
  type ReadResponseMsg,
  type SetForwardingPipelineConfigRequestMsg,
  type StatusMsg,
  type StreamMessageRequestMsg,
  type StreamMessageResponseMsg,
  type Uint128Msg,
  type UpdateMsg,
  type UpdateType,
  type WriteRequestMsg,
} from './proto.js';

const DEBUG = process.env['SHARP_DEBUG']?.split(',').includes('p4runtime') === true;
const trace = (msg: string): void => {
  if (DEBUG) process.stderr.write(`p4runtime: ${msg}\n`);
};

export interface P4RuntimeClientOptions {
  /** gRPC target: "unix:/path/to/socket", "127.0.0.1:9559", ... */
  address: string;
  deviceId: number | bigint;
  /** this controller's election id (default 1n); the highest live one is primary */
  electionId?: bigint;
  /** deadline of connecting, arbitration and every call (default 10000 ms) */
  timeoutMs?: number;
  /** the P4Info of the running pipeline, when it is not set with setPipeline() */
  p4info?: P4Info;
  /** TLS (mutual with cert and key); without it the channel is plaintext */
  tls?: P4RuntimeTlsOptions;
}

/** TLS towards a P4Runtime server, PEM material in memory. */
export interface P4RuntimeTlsOptions {
  /** the CA certificate(s) the server's certificate must be signed by */
  ca: Buffer;
  /** this client's certificate and key (both or neither): what a server with client auth requires */
  cert?: Buffer;
  key?: Buffer;
  /** the name the server's certificate must carry (SAN); default the host of the address */
  serverName?: string;
}

export interface PacketIn {
  payload: Buffer;
  /** packet_in header fields by name */
  metadata: Record<string, bigint>;
}

export interface PrimacyLost {
  /** election id of the new primary (when the server said) */
  primaryElectionId: bigint | undefined;
  /** the arbitration status code we got (ALREADY_EXISTS: another client is primary; NOT_FOUND: none is) */
  code: number;
}

export interface P4RuntimeClientEvents {
  'packet-in': [PacketIn];
  'primacy-lost': [PrimacyLost];
  'primacy-gained': [];
  error: [P4RuntimeError];
  close: [];
}

/** One update of a Write, by names. */
export type P4Update =
  | { type: UpdateType; tableEntry: TableEntrySpec }
  | { type: 'MODIFY'; counterEntry: { counter: string; index: number | bigint; data: CounterValue } };

export interface WriteOptions {
  /** default CONTINUE_ON_ERROR: each update is applied or fails on its own */
  atomicity?: 'CONTINUE_ON_ERROR' | 'ROLLBACK_ON_ERROR' | 'DATAPLANE_ATOMIC';
}

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.initial_reconnect_backoff_ms': 50,
  'grpc.min_reconnect_backoff_ms': 50,
  'grpc.max_reconnect_backoff_ms': 1000,
  'grpc.enable_retries': 0,
  // one connection per client, also when several clients talk to one switch
  'grpc.use_local_subchannel_pool': 1,
  // pipelines (BMv2 JSON) and big reads exceed the 4 MiB default
  'grpc.max_send_message_length': 256 * 1024 * 1024,
  'grpc.max_receive_message_length': 256 * 1024 * 1024,
};

const MASK64 = (1n << 64n) - 1n;

export function uint128(v: bigint): Uint128Msg {
  if (v < 0n || v > (1n << 128n) - 1n) throw new RangeError(`election id ${v} is not a 128-bit unsigned integer`);
  return { high: (v >> 64n).toString(), low: (v & MASK64).toString() };
}

export function fromUint128(m: Uint128Msg | undefined): bigint | undefined {
  if (!m) return undefined;
  return (BigInt(m.high ?? '0') << 64n) | BigInt(m.low ?? '0');
}

/**
 * The per-update errors of a failed Write, from the google.rpc.Status in the
 * `grpc-status-details-bin` trailer: one p4.v1.Error per update, in request
 * order; those with canonical_code OK were applied. Undefined when the
 * trailer is absent or holds no p4.v1.Error.
 */
export function decodeWriteErrorDetails(statusBin: Uint8Array): { code: number; message: string; updates: FailedUpdate[]; total: number } | undefined {
  const status = decode<StatusMsg>('google.rpc.Status', statusBin);
  const errors = (status.details ?? []).filter((d) => d.type_url === P4_ERROR_TYPE_URL);
  if (errors.length === 0) return undefined;
  const updates: FailedUpdate[] = [];
  errors.forEach((d, index) => {
    const e = decode<P4ErrorMsg>('p4.v1.Error', d.value ?? Buffer.alloc(0));
    const code = e.canonical_code ?? 0;
    if (code === grpc.status.OK) return;
    const u: FailedUpdate = { index, code, message: e.message ?? '' };
    if (e.space) u.space = e.space;
    if (e.code) u.targetCode = e.code;
    updates.push(u);
  });
  return { code: status.code ?? grpc.status.UNKNOWN, message: status.message ?? '', updates, total: errors.length };
}

const c = {
  write: codec<WriteRequestMsg>('p4.v1.WriteRequest'),
  writeResponse: codec<EmptyMsg>('p4.v1.WriteResponse'),
  read: codec<ReadRequestMsg>('p4.v1.ReadRequest'),
  readResponse: codec<ReadResponseMsg>('p4.v1.ReadResponse'),
  setPipeline: codec<SetForwardingPipelineConfigRequestMsg>('p4.v1.SetForwardingPipelineConfigRequest'),
  setPipelineResponse: codec<EmptyMsg>('p4.v1.SetForwardingPipelineConfigResponse'),
  getPipeline: codec<GetForwardingPipelineConfigRequestMsg>('p4.v1.GetForwardingPipelineConfigRequest'),
  getPipelineResponse: codec<GetForwardingPipelineConfigResponseMsg>('p4.v1.GetForwardingPipelineConfigResponse'),
  capabilities: codec<EmptyMsg>('p4.v1.CapabilitiesRequest'),
  capabilitiesResponse: codec<CapabilitiesResponseMsg>('p4.v1.CapabilitiesResponse'),
  streamRequest: codec<StreamMessageRequestMsg>('p4.v1.StreamMessageRequest'),
  streamResponse: codec<StreamMessageResponseMsg>('p4.v1.StreamMessageResponse'),
};

const path = (method: string): string => `/${P4RUNTIME_SERVICE}/${method}`;

/** grpc-js's last error when the connection closed before HTTP/2 began (not "... before the deadline": that is a timeout) */
const CLOSED_BEFORE_HTTP2 = /Last error: (?:Error: )?(?:Failed to connect(?! before)|Connection dropped|read ECONNRESET|socket hang up)/;

/** The host of a gRPC target ("10.0.0.5:9559", "[fd00::5]:9559", "dns:///s2:9559"): the name TLS checks by default. */
function hostOf(address: string): string {
  const a = address.replace(/^(dns|ipv4|ipv6):(\/\/[^/]*\/)?/, '');
  const v6 = /^\[([^\]]+)\]/.exec(a);
  if (v6) return v6[1]!;
  const i = a.lastIndexOf(':');
  return i < 0 ? a : a.slice(0, i);
}

function isServiceError(e: unknown): e is grpc.ServiceError {
  return e instanceof Error && typeof (e as Partial<grpc.ServiceError>).code === 'number';
}

export class P4RuntimeClient extends EventEmitter<P4RuntimeClientEvents> {
  readonly address: string;
  readonly deviceId: bigint;
  readonly electionId: bigint;
  readonly timeoutMs: number;
  /** the CN of the certificate this client presents; undefined without TLS or without a client certificate */
  readonly identity: string | undefined;
  /** the name the server's certificate must carry; undefined on a plaintext channel */
  readonly serverName: string | undefined;
  /** the last stream error (also when nobody listened for 'error') */
  lastError: P4RuntimeError | undefined;

  #p4info: P4Info | undefined;
  readonly #client: grpc.Client;
  #stream: grpc.ClientDuplexStream<StreamMessageRequestMsg, StreamMessageResponseMsg> | undefined;
  #primary = false;
  #primaryElectionId: bigint | undefined;
  #closed = false;
  #closeEmitted = false;
  // the pending arbitration of connect()
  #arbitration: { resolve: () => void; reject: (e: P4RuntimeError) => void } | undefined;
  // the names on the last server certificate that did not carry serverName
  #presented: string[] | undefined;

  private constructor(options: P4RuntimeClientOptions) {
    super();
    this.address = options.address;
    this.deviceId = BigInt(options.deviceId);
    this.electionId = options.electionId ?? 1n;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.#p4info = options.p4info;
    uint128(this.electionId); // range check
    const tls = options.tls;
    if (tls === undefined) {
      this.identity = undefined;
      this.serverName = undefined;
      this.#client = new grpc.Client(options.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
      return;
    }
    if ((tls.cert === undefined) !== (tls.key === undefined)) throw new P4RuntimeError(`P4Runtime ${options.address}: give tls.cert and tls.key together (or neither)`, grpc.status.INVALID_ARGUMENT, '');
    try {
      this.identity = tls.cert === undefined ? undefined : identityOf(tls.cert).name;
    } catch (e) {
      throw new P4RuntimeError(`P4Runtime ${options.address}: tls.cert is not a PEM certificate (${(e as Error).message})`, grpc.status.INVALID_ARGUMENT, '', { cause: e });
    }
    this.serverName = tls.serverName ?? hostOf(options.address);
    const credentials = grpc.credentials.createSsl(tls.ca, tls.key ?? null, tls.cert ?? null, {
      // grpc-js passes the override below as `host`; the names seen are kept for the error
      checkServerIdentity: (host: string, cert: PeerCertificate): Error | undefined => {
        const err = checkServerIdentity(host, cert);
        this.#presented = err === undefined ? undefined : serverNames(identityOf(cert.raw));
        return err;
      },
    });
    const named: grpc.ChannelOptions = tls.serverName === undefined ? {} : { 'grpc.ssl_target_name_override': tls.serverName, 'grpc.default_authority': tls.serverName };
    this.#client = new grpc.Client(options.address, credentials, { ...CHANNEL_OPTIONS, ...named });
  }

  get #parties(): P4RuntimeTlsParties {
    return { address: this.address, client: this.identity, serverName: this.serverName };
  }

  /**
   * The P4RuntimeSecurityError a failed connection means (its status
   * details say why), or undefined when it is not about security.
   */
  #securityError(details: string, cause: unknown): P4RuntimeError | undefined {
    const reason = connectionReason(details);
    const me = this.identity === undefined ? 'this client (no certificate)' : `the certificate of '${this.identity}'`;
    const closedEarly = CLOSED_BEFORE_HTTP2.test(details) && !UNREACHABLE.test(reason);
    if (this.serverName === undefined) {
      // a plaintext client: a TLS server ends the connection at our first bytes
      return closedEarly ? new P4RuntimeTransportMismatchError('the connection closed before HTTP/2 began: the server may require TLS (this client speaks plaintext)', this.#parties, reason, { cause }) : undefined;
    }
    if (this.#presented !== undefined && /ERR_TLS_CERT_ALTNAME_INVALID|does not match certificate's altnames/.test(details)) {
      return new P4RuntimeServerIdentityError(`the server's certificate names '${this.#presented.join("', '")}', expected '${this.serverName}'`, this.#parties, this.#presented, reason, { cause });
    }
    if (NOT_TLS.test(details)) return new P4RuntimeTransportMismatchError('the server does not speak TLS (plaintext?)', this.#parties, reason, { cause });
    if (REFUSED_BY_PEER.test(details)) return new P4RuntimeCertificateRefusedError(`did not accept ${me}`, this.#parties, reason, { cause });
    if (UNTRUSTED.test(details)) return new P4RuntimeUntrustedServerError(`the server's certificate is not signed by the CA this client trusts (expected '${this.serverName}')`, this.#parties, reason, { cause });
    // with TLS 1.3 a server refusing our certificate sends its alert after the handshake: grpc-js sees the connection close before HTTP/2 began
    if (closedEarly) return new P4RuntimeCertificateRefusedError(`closed the connection after the TLS handshake: it did not accept ${me}`, this.#parties, reason, { cause });
    return undefined;
  }

  /**
   * Connects and becomes primary. Rejects with P4RuntimeUnavailableError when
   * the server cannot be reached, P4RuntimeNotPrimaryError when another
   * client holds a higher election id, P4RuntimeError for other refusals
   * (e.g. INVALID_ARGUMENT: the election id is in use, NOT_FOUND: no such device).
   */
  static async connect(options: P4RuntimeClientOptions): Promise<P4RuntimeClient> {
    const client = new P4RuntimeClient(options);
    try {
      await client.#waitForReady();
      await client.#arbitrate();
      return client;
    } catch (e) {
      client.close();
      throw e;
    }
  }

  /** Whether the server last told us we are the primary controller. */
  get isPrimary(): boolean {
    return this.#primary && !this.#closed;
  }

  /** Election id of the current primary, as last announced by the server. */
  get primaryElectionId(): bigint | undefined {
    return this.#primaryElectionId;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The P4Info used for names (set by setPipeline() or the connect option). */
  get p4info(): P4Info {
    if (!this.#p4info) throw new P4RuntimeError('P4RuntimeClient: no P4Info: call setPipeline() or pass p4info to connect()', grpc.status.FAILED_PRECONDITION, '');
    return this.#p4info;
  }
  set p4info(p: P4Info) {
    this.#p4info = p;
  }

  #waitForReady(): Promise<void> {
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + this.timeoutMs;
      let done = false;
      const finish = (e?: P4RuntimeError): void => {
        if (done) return;
        done = true;
        if (e === undefined) resolve();
        else reject(e);
      };
      this.#client.waitForReady(deadline, (err) => {
        if (!err) return finish();
        this.#lastConnectionError((details, probe) => {
          trace(`${this.address}: not ready: ${details || err.message}`);
          finish(this.#securityError(details, probe ?? err) ?? new P4RuntimeUnavailableError(this.address, `not reachable within ${this.timeoutMs} ms (${connectionReason(details) || err.message})`, { cause: probe ?? err }));
        });
      });
      // a connection refused for its security will be refused again: the first such attempt ends the wait
      const channel = this.#client.getChannel();
      const watch = (state: grpc.connectivityState): void => {
        if (done) return;
        if (state === grpc.connectivityState.TRANSIENT_FAILURE) {
          this.#lastConnectionError((details, probe) => {
            const e = probe === undefined ? undefined : this.#securityError(details, probe);
            if (e !== undefined) finish(e);
          });
        }
        channel.watchConnectivityState(state, deadline, (err) => {
          if (!err) watch(channel.getConnectivityState(false));
        });
      };
      watch(channel.getConnectivityState(true));
    });
  }

  /** The status details of the channel's last failed connection: a call that fails at once says them (waitForReady only says it timed out). */
  #lastConnectionError(then: (details: string, error: grpc.ServiceError | undefined) => void): void {
    this.#client.makeUnaryRequest<EmptyMsg, CapabilitiesResponseMsg>(path('Capabilities'), c.capabilities.serialize, c.capabilitiesResponse.deserialize, {}, new grpc.Metadata(), { deadline: Date.now() + 1000 }, (e) => then(e?.details ?? '', e ?? undefined));
  }

  #arbitrate(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#arbitration = undefined;
        reject(new P4RuntimeUnavailableError(this.address, `no answer to the arbitration within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.#arbitration = {
        resolve: () => {
          clearTimeout(timer);
          this.#arbitration = undefined;
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          this.#arbitration = undefined;
          reject(e);
        },
      };
      const stream = this.#client.makeBidiStreamRequest<StreamMessageRequestMsg, StreamMessageResponseMsg>(path('StreamChannel'), c.streamRequest.serialize, c.streamResponse.deserialize);
      this.#stream = stream;
      stream.on('data', (m: StreamMessageResponseMsg) => this.#onStreamMessage(m));
      stream.on('error', (e: Error) => this.#onStreamError(e));
      stream.on('end', () => this.#onStreamEnd());
      trace(`${this.address}: arbitration device ${this.deviceId} election ${this.electionId}`);
      stream.write({ arbitration: { device_id: this.deviceId.toString(), election_id: uint128(this.electionId) } });
    });
  }

  #onStreamMessage(m: StreamMessageResponseMsg): void {
    if (m.arbitration) this.#onArbitration(m.arbitration);
    else if (m.packet) {
      const metadata = this.#p4info ? decodePacketMetadata(this.#p4info, 'packet_in', m.packet.metadata ?? []) : Object.fromEntries((m.packet.metadata ?? []).map((x) => [`#${x.metadata_id}`, bytestringToBigInt(x.value ?? Buffer.alloc(0))]));
      const p: PacketIn = { payload: m.packet.payload ?? Buffer.alloc(0), metadata };
      trace(`${this.address}: packet-in ${p.payload.length} bytes`);
      this.emit('packet-in', p);
    } else if (m.error) {
      const e = m.error;
      const code = e.canonical_code ?? grpc.status.UNKNOWN;
      this.#emitError(new P4RuntimeError(`P4Runtime stream error from ${this.address}: ${codeName(code)}: ${e.message ?? ''}${e.packet_out ? ' (packet-out)' : ''}`, code, e.message ?? ''));
    }
  }

  #onArbitration(a: MasterArbitrationUpdateMsg): void {
    const code = a.status?.code ?? grpc.status.OK;
    this.#primaryElectionId = fromUint128(a.election_id);
    trace(`${this.address}: arbitration answer ${codeName(code)} primary election ${this.#primaryElectionId ?? '(none)'}`);
    const wasPrimary = this.#primary;
    this.#primary = code === grpc.status.OK;
    if (this.#arbitration) {
      if (this.#primary) this.#arbitration.resolve();
      else {
        const who = this.#primaryElectionId !== undefined ? `the primary has election id ${this.#primaryElectionId}` : 'there is no primary';
        this.#arbitration.reject(
          new P4RuntimeNotPrimaryError(`P4Runtime ${this.address} device ${this.deviceId}: election id ${this.electionId} does not make this client primary (${codeName(code)}: ${a.status?.message ?? ''}; ${who})`, this.#primaryElectionId, code, a.status?.message ?? ''),
        );
      }
      return;
    }
    if (wasPrimary && !this.#primary) this.emit('primacy-lost', { primaryElectionId: this.#primaryElectionId, code });
    else if (!wasPrimary && this.#primary) this.emit('primacy-gained');
  }

  #streamError(e: Error): P4RuntimeError {
    if (e instanceof P4RuntimeError) return e;
    if (isServiceError(e)) {
      // before arbitration answered, a closed connection may be a TLS refusal (TLS 1.3: the server's alert comes after the handshake)
      const refused = e.code === grpc.status.UNAVAILABLE && this.#arbitration !== undefined ? this.#securityError(e.details, e) : undefined;
      if (refused !== undefined) return refused;
      if (e.code === grpc.status.UNAVAILABLE) return new P4RuntimeUnavailableError(this.address, e.details || e.message, { cause: e });
      return new P4RuntimeError(`P4Runtime stream to ${this.address}: ${codeName(e.code)}: ${e.details}`, e.code, e.details, { cause: e });
    }
    return new P4RuntimeError(`P4Runtime stream to ${this.address}: ${e.message}`, grpc.status.UNKNOWN, e.message, { cause: e });
  }

  #onStreamError(e: Error): void {
    if (this.#closed) return; // our own cancel
    const err = this.#streamError(e);
    trace(`${this.address}: stream error ${err.message}`);
    this.#primary = false;
    if (this.#arbitration) this.#arbitration.reject(err);
    else this.#emitError(err);
    this.close();
  }

  #onStreamEnd(): void {
    if (this.#closed) return;
    trace(`${this.address}: stream ended by the server`);
    this.#primary = false;
    if (this.#arbitration) this.#arbitration.reject(new P4RuntimeUnavailableError(this.address, 'the server ended the stream during arbitration'));
    this.close();
  }

  #emitError(e: P4RuntimeError): void {
    this.lastError = e;
    if (this.listenerCount('error') > 0) this.emit('error', e);
  }

  /** Ends the stream and closes the channel; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#primary = false;
    const s = this.#stream;
    this.#stream = undefined;
    if (s) {
      try {
        s.end();
      } catch {
        /* already ended */
      }
      s.cancel();
    }
    this.#client.close();
    trace(`${this.address}: closed`);
    if (!this.#closeEmitted) {
      this.#closeEmitted = true;
      // after the caller's current step, so a 'close' listener added right after close() still hears it
      queueMicrotask(() => this.emit('close'));
    }
  }

  // ---------------------------------------------------------------- calls

  #checkOpen(): void {
    if (this.#closed) throw new P4RuntimeUnavailableError(this.address, 'the client is closed');
  }

  #checkPrimary(what: string): void {
    this.#checkOpen();
    if (!this.#primary) {
      throw new P4RuntimeNotPrimaryError(
        `P4Runtime ${this.address}: ${what} refused: this client (election id ${this.electionId}) is not the primary${this.#primaryElectionId !== undefined ? ` (the primary has election id ${this.#primaryElectionId})` : ''}`,
        this.#primaryElectionId,
      );
    }
  }

  #callError(method: string, e: unknown, updates = 0): P4RuntimeError {
    if (!isServiceError(e)) return new P4RuntimeError(`P4Runtime ${method}: ${e instanceof Error ? e.message : String(e)}`, grpc.status.UNKNOWN, String(e), { cause: e });
    if (e.code === grpc.status.UNAVAILABLE) return new P4RuntimeUnavailableError(this.address, `${method}: ${e.details}`, { cause: e });
    if (method === 'Write') {
      const bin = e.metadata?.get('grpc-status-details-bin')[0];
      const details = bin !== undefined && typeof bin !== 'string' ? decodeWriteErrorDetails(bin) : undefined;
      if (details) return new P4RuntimeWriteError(e.code, e.details, details.updates, Math.max(details.total, updates), { cause: e });
    }
    if (e.code === grpc.status.PERMISSION_DENIED && /primary|master/i.test(e.details)) {
      this.#primary = false;
      return new P4RuntimeNotPrimaryError(`P4Runtime ${method} refused by ${this.address}: ${e.details}`, this.#primaryElectionId, e.code, e.details, { cause: e });
    }
    if (method === 'Write') return new P4RuntimeWriteError(e.code, e.details, [], updates, { cause: e });
    return new P4RuntimeError(`P4Runtime ${method} at ${this.address}: ${codeName(e.code)}: ${e.details}`, e.code, e.details, { cause: e });
  }

  #unary<Req, Res>(method: string, codecs: [Codec<Req>, Codec<Res>], req: Req, updates = 0): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      this.#client.makeUnaryRequest<Req, Res>(path(method), codecs[0].serialize, codecs[1].deserialize, req, new grpc.Metadata(), { deadline: Date.now() + this.timeoutMs }, (err, res) => {
        if (err) reject(this.#callError(method, err, updates));
        else resolve(res as Res);
      });
    });
  }

  #read(entities: EntityMsg[]): Promise<EntityMsg[]> {
    this.#checkOpen();
    return new Promise<EntityMsg[]>((resolve, reject) => {
      const out: EntityMsg[] = [];
      const call = this.#client.makeServerStreamRequest<ReadRequestMsg, ReadResponseMsg>(path('Read'), c.read.serialize, c.readResponse.deserialize, { device_id: this.deviceId.toString(), entities }, new grpc.Metadata(), {
        deadline: Date.now() + this.timeoutMs,
      });
      call.on('data', (r: ReadResponseMsg) => out.push(...(r.entities ?? [])));
      call.on('error', (e: Error) => reject(this.#callError('Read', e)));
      call.on('end', () => resolve(out));
    });
  }

  /** The P4Runtime API version the server implements. */
  async capabilities(): Promise<string> {
    this.#checkOpen();
    const r = await this.#unary('Capabilities', [c.capabilities, c.capabilitiesResponse], {});
    return r.p4runtime_api_version ?? '';
  }

  /**
   * Installs a pipeline (VERIFY_AND_COMMIT): the P4Info and the target's
   * device config (for BMv2: the JSON p4c wrote). The P4Info becomes the
   * one this client uses for names.
   */
  async setPipeline(p4info: P4Info, deviceConfig: Buffer, options: { cookie?: bigint } = {}): Promise<void> {
    this.#checkPrimary('SetForwardingPipelineConfig');
    await this.#unary('SetForwardingPipelineConfig', [c.setPipeline, c.setPipelineResponse], {
      device_id: this.deviceId.toString(),
      election_id: uint128(this.electionId),
      action: 'VERIFY_AND_COMMIT',
      config: { p4info: p4info.toMessage(), p4_device_config: deviceConfig, ...(options.cookie !== undefined ? { cookie: { cookie: options.cookie.toString() } } : {}) },
    });
    this.#p4info = p4info;
  }

  /** The P4Info of the running pipeline, or undefined when none is installed. */
  async getPipelineP4Info(): Promise<P4Info | undefined> {
    return (await this.getPipeline('P4INFO_AND_COOKIE'))?.p4info;
  }

  /**
   * What the switch runs, without its device config (GetForwardingPipelineConfig
   * COOKIE_ONLY or P4INFO_AND_COOKIE): undefined when no pipeline is installed;
   * the cookie is undefined when the pipeline was set without one (or 0).
   */
  async getPipeline(responseType: 'COOKIE_ONLY' | 'P4INFO_AND_COOKIE'): Promise<{ p4info?: P4Info; cookie?: bigint } | undefined> {
    this.#checkOpen();
    let r: GetForwardingPipelineConfigResponseMsg;
    try {
      r = await this.#unary('GetForwardingPipelineConfig', [c.getPipeline, c.getPipelineResponse], { device_id: this.deviceId.toString(), response_type: responseType });
    } catch (e) {
      if (e instanceof P4RuntimeError && e.code === grpc.status.FAILED_PRECONDITION) return undefined; // no pipeline
      throw e;
    }
    const p = r.config?.p4info;
    const raw = r.config?.cookie?.cookie;
    const cookie = raw === undefined || BigInt(raw) === 0n ? undefined : BigInt(raw);
    // COOKIE_ONLY carries no P4Info: an empty answer is a pipeline without a cookie, or none (BMv2 then fails the call)
    if (responseType === 'COOKIE_ONLY') return cookie === undefined ? {} : { cookie };
    if (p === undefined || Object.keys(p).length === 0) return undefined;
    return { p4info: P4Info.fromJson(p), ...(cookie === undefined ? {} : { cookie }) };
  }

  /**
   * One Write request. Rejects with P4RuntimeWriteError listing the failed
   * updates by index (the others were applied, with CONTINUE_ON_ERROR).
   */
  async write(updates: readonly P4Update[], options: WriteOptions = {}): Promise<void> {
    this.#checkPrimary('Write');
    if (updates.length === 0) return;
    const p4info = this.p4info;
    const wire: UpdateMsg[] = updates.map((u) => {
      if ('tableEntry' in u) return { type: u.type, entity: { table_entry: tableEntry(p4info, u.tableEntry) } };
      return { type: u.type, entity: { counter_entry: counterEntry(p4info, u.counterEntry.counter, u.counterEntry.index, u.counterEntry.data) } };
    });
    await this.#unary(
      'Write',
      [c.write, c.writeResponse],
      { device_id: this.deviceId.toString(), election_id: uint128(this.electionId), updates: wire, atomicity: options.atomicity ?? 'CONTINUE_ON_ERROR' },
      updates.length,
    );
  }

  insertEntry(entry: TableEntrySpec): Promise<void> {
    if (entry.action === undefined && entry.isDefaultAction !== true) {
      return Promise.reject(new P4RuntimeError(`P4Runtime INSERT into ${entry.table}: an inserted entry needs an action`, grpc.status.INVALID_ARGUMENT, ''));
    }
    return this.write([{ type: 'INSERT', tableEntry: entry }]);
  }

  modifyEntry(entry: TableEntrySpec): Promise<void> {
    return this.write([{ type: 'MODIFY', tableEntry: entry }]);
  }

  /** Deletes the entry with this match (and priority); its action is ignored. */
  deleteEntry(entry: TableEntrySpec): Promise<void> {
    return this.write([{ type: 'DELETE', tableEntry: entry }]);
  }

  /** Every entry of a table (the default entry is not included). */
  async readEntries(table: string): Promise<DecodedTableEntry[]> {
    const p4info = this.p4info;
    const info = p4info.table(table);
    const entities = await this.#read([{ table_entry: { table_id: info.id } }]);
    return entities.flatMap((e) => (e.table_entry ? [decodeTableEntry(p4info, e.table_entry)] : []));
  }

  /** One index of an indirect counter (the count its unit does not keep is 0). */
  async readCounter(counter: string, index: number | bigint): Promise<CounterValue> {
    const msg = counterEntry(this.p4info, counter, index);
    const unit = this.p4info.counter(counter).unit;
    const entities = await this.#read([{ counter_entry: msg }]);
    const e = entities.find((x) => x.counter_entry !== undefined);
    return decodeCounterData(e?.counter_entry?.data, unit);
  }

  /** Every index of an indirect counter. */
  async readCounters(counter: string): Promise<Map<number, CounterValue>> {
    const msg = counterEntry(this.p4info, counter);
    const unit = this.p4info.counter(counter).unit;
    const entities = await this.#read([{ counter_entry: msg }]);
    const out = new Map<number, CounterValue>();
    for (const e of entities) {
      if (e.counter_entry) out.set(Number(e.counter_entry.index?.index ?? '0'), decodeCounterData(e.counter_entry.data, unit));
    }
    return out;
  }

  /** Sets one index of an indirect counter (e.g. to zero: a reset). */
  writeCounter(counter: string, index: number | bigint, value: CounterValue): Promise<void> {
    return this.write([{ type: 'MODIFY', counterEntry: { counter, index, data: value } }]);
  }

  /**
   * Sends a frame to the switch as a packet-out, with the packet_out header
   * fields by name (every field must be given).
   */
  sendPacketOut(payload: Buffer, metadata: Readonly<Record<string, P4Value>>): void {
    this.#checkPrimary('packet-out');
    const md = packetMetadata(this.p4info, 'packet_out', metadata);
    this.#stream?.write({ packet: { payload, metadata: md } });
  }
}
