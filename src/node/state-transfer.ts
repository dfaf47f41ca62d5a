/**
 * The node's side of a node-to-node state transfer (TransferState): the old
 * instance's node exports the moving flows' records, hands them to the new
 * instance's node through that node's own ImportState (its Unix socket, or
 * mutual TLS with this node's certificate), and deletes them here only once
 * every batch was acknowledged. The controller sends the selection and the
 * peer's address; the records never pass through it.
 *
 * Which peers this node sends to is its config's peers.allow; a TLS peer is
 * checked by its certificate (it must name the peer, signed by peers.ca), a
 * Unix peer by the name its Health gives.
 */
import type { FlowSelection, FlowStateEntry, VnfStateStore } from '../dataplane/types.js';
import { NodeClient, type PeerFrames, type StatePeerVia } from './client.js';
import { describeIdentity, nodeChannel, tlsEndpoint, unixEndpoint, type TlsMaterial } from './transport/index.js';

/** records per ImportState call to the peer: far below gRPC's 4 MiB message limit for any VNF record size the node accepts */
export const TRANSFER_CHUNK = 8192;

/** A transfer that did not complete; nothing was deleted at the sending node. Carries the peer and the cause. */
export class StateTransferError extends Error {
  override name = 'StateTransferError';
  constructor(
    readonly peer: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** A peer this node may not send state to (not on its peers.allow). */
export class StatePeerNotAllowedError extends StateTransferError {
  override name = 'StatePeerNotAllowedError';
}

/** The transfer's budget ran out; the sending node kept its records (the peer may hold a copy). */
export class StateTransferTimeoutError extends StateTransferError {
  override name = 'StateTransferTimeoutError';
}

export interface StatePeerPolicy {
  /** this node's name */
  self: string;
  /** the nodes it sends state to */
  allow: readonly string[];
  /** this node's certificate and key (client use) and the CA peers' certificates must be signed by; undefined: Unix peers only */
  tls: TlsMaterial | undefined;
}

export interface TransferRequest {
  instance: string;
  toInstance: string;
  /** undefined: toInstance is on this node */
  peer: { node: string; via: StatePeerVia; frames?: PeerFrames } | undefined;
  select: FlowSelection;
  keepExisting: boolean;
  handoverId: number;
  /** Date.now() by which the transfer is complete or abandoned */
  deadline: number;
}

export interface TransferOutcome {
  records: number;
  bytes: number;
  peerNode: string;
  transport: 'tls' | 'unix' | 'local';
  peerIdentity: string;
  calls: number;
}

/** Imports records, leaving those of flows the instance has untouched when `keepExisting`. */
export async function importKeeping(store: VnfStateStore, instance: string, entries: readonly FlowStateEntry[], keepExisting: boolean): Promise<number> {
  let todo = entries;
  if (keepExisting && entries.length > 0) {
    const have = new Set((await store.exportState(instance, 'all')).map((e) => flowId(e.flow)));
    todo = entries.filter((e) => !have.has(flowId(e.flow)));
  }
  if (todo.length > 0) await store.importState(instance, todo);
  return todo.length;
}

const flowId = (f: FlowStateEntry['flow']): string => `${f.src}|${f.dst}|${f.sport}|${f.dport}|${f.proto}`;

export class StatePeers {
  readonly #policy: StatePeerPolicy;
  readonly #allow: Set<string>;
  /** one connection per peer and address, kept for the next handover */
  readonly #clients = new Map<string, Promise<NodeClient>>();

  constructor(policy: StatePeerPolicy) {
    this.#policy = policy;
    this.#allow = new Set(policy.allow);
  }

  get allow(): readonly string[] {
    return this.#policy.allow;
  }

  #connect(node: string, via: StatePeerVia, timeoutMs: number, frames?: PeerFrames): Promise<NodeClient> {
    const key = `${node}\0${'unix' in via ? `unix:${via.unix}` : via.address}`;
    let c = this.#clients.get(key);
    if (c === undefined) {
      const tls = this.#policy.tls;
      if (!('unix' in via) && tls === undefined) throw new StateTransferError(node, `node ${this.#policy.self} has no certificate (tls) to reach node ${node} at ${via.address} over mutual TLS`);
      const channel = 'unix' in via ? nodeChannel(unixEndpoint(via.unix, node)) : nodeChannel(tlsEndpoint(node, via.address, tls!));
      c = NodeClient.connect({ channel, readRules: false, callTimeoutMs: timeoutMs, ...(frames === undefined ? {} : { framesHint: frames }) });
      this.#clients.set(key, c);
      // a failed connection is not kept: the next transfer tries again
      c.catch(() => this.#clients.delete(key));
    }
    return c;
  }

  #drop(node: string, via: StatePeerVia): void {
    const key = `${node}\0${'unix' in via ? `unix:${via.unix}` : via.address}`;
    const c = this.#clients.get(key);
    this.#clients.delete(key);
    c?.then((x) => x.close(), () => undefined);
  }

  /** Runs one transfer: export here, import at the peer (acknowledged batch by batch), delete here. */
  async transfer(store: VnfStateStore, r: TransferRequest): Promise<TransferOutcome> {
    const self = this.#policy.self;
    const local = r.peer === undefined || r.peer.node === self;
    if (!local && !this.#allow.has(r.peer!.node)) {
      throw new StatePeerNotAllowedError(r.peer!.node, `node ${self} does not send state to node '${r.peer!.node}': it is not on its peers.allow (${this.#policy.allow.join(', ') || 'empty'})`);
    }
    const entries = await store.exportState(r.instance, r.select);
    const bytes = entries.reduce((a, e) => a + e.value.length, 0);
    if (local) {
      await importKeeping(store, r.toInstance, entries, r.keepExisting);
      if (entries.length > 0) await store.deleteState(r.instance, entries.map((e) => e.flow));
      return { records: entries.length, bytes, peerNode: self, transport: 'local', peerIdentity: '', calls: 0 };
    }
    const { node, via } = r.peer!;
    const where = `node ${node} at ${'unix' in via ? `unix:${via.unix}` : via.address}`;
    const left = (): number => r.deadline - Date.now();
    let calls = 0;
    let peerIdentity = '';
    try {
      const peer = await this.#connect(node, via, Math.max(1, left()), r.peer!.frames);
      if (peer.name !== node) throw new StateTransferError(node, `${where} says it is node '${peer.name}'`);
      const verified = peer.serverIdentity;
      if (verified !== undefined) peerIdentity = describeIdentity(verified);
      for (let i = 0; i < entries.length; i += TRANSFER_CHUNK) {
        if (left() <= 0) throw new StateTransferTimeoutError(node, `the transfer's budget ran out after ${i} of ${entries.length} records`);
        calls++;
        await peer.importState(r.toInstance, entries.slice(i, i + TRANSFER_CHUNK), { keepExisting: r.keepExisting, timeoutMs: Math.max(1, left()) });
      }
    } catch (e) {
      if (!(e instanceof StateTransferError)) this.#drop(node, via);
      const cause = e instanceof Error ? e.message : String(e);
      throw new StateTransferError(node, `moving ${entries.length} state records of ${r.instance} to ${r.toInstance} on ${where} failed, ${r.instance} keeps them: ${cause}`, { cause: e });
    }
    // acknowledged by the peer: only now do they leave this node, unless the caller gave up meanwhile (then both hold them; a rollback keeps these)
    if (left() <= 0) throw new StateTransferTimeoutError(node, `${where} acknowledged ${entries.length} records after the transfer's budget ran out: ${r.instance} keeps them`);
    if (entries.length > 0) await store.deleteState(r.instance, entries.map((e) => e.flow));
    return { records: entries.length, bytes, peerNode: node, transport: 'unix' in via ? 'unix' : 'tls', peerIdentity, calls };
  }

  close(): void {
    for (const c of this.#clients.values()) c.then((x) => x.close(), () => undefined);
    this.#clients.clear();
  }
}
