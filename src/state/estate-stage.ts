/**
 * E-State as the node's staging store (config stateStore.estate): the node
 * runs one E-State node of the group (id: the node's name) on its host. For
 * a handover the old instance's node takes the moving flows' records into
 * its local view (stage), the new instance's node fetches them from the
 * group's members straight over their E-State connections, mutual TLS
 * between node certificates (obtain), and the old node forgets them
 * (discard). The controller names flows and never holds a record; the
 * group's members are in the nodes' configs, not the controller's.
 */
import type { FlowKey, FlowStateEntry } from '../dataplane/types.js';
import type { TlsMaterial } from '../node/transport/certs.js';
import { EStateNode, type EStateNodeOptions } from './estate/node.js';
import { flowKeyString } from './flow-key.js';
import { StateError } from './types.js';

export interface NodeEStateStoreOptions {
  /** the node's name: its id in the group */
  id: string;
  /** the group's name: two nodes stage state for each other only in the same group */
  group: string;
  /** where this node's E-State node serves: host:port (mutual TLS, needs tls) or unix:/path.sock */
  listen: string;
  /** the other members: node name and where its E-State node serves */
  members: readonly { node: string; address: string }[];
  /** the node certificate and the CA the members' certificates are signed by */
  tls?: TlsMaterial;
  /** TCP: refuses a connecting certificate (a reason) or admits it (undefined) */
  admit?: EStateNodeOptions['admit'];
  /** per request to a member (default 1000 ms) */
  timeoutMs?: number;
}

/** "sharp/h<hid>/<instance>/<flow>": a handover's records of one instance */
export function stagedItemKey(instance: string, handoverId: number, flow: FlowKey): string {
  return `${stagedPrefix(instance, handoverId)}${flowKeyString(flow)}`;
}

const stagedPrefix = (instance: string, handoverId: number): string => `sharp/h${handoverId}/${instance}/`;

export class NodeEStateStore {
  readonly kind = 'estate';
  readonly #o: NodeEStateStoreOptions;
  readonly #node: EStateNode;

  private constructor(o: NodeEStateStoreOptions, node: EStateNode) {
    this.#o = o;
    this.#node = node;
  }

  static async start(o: NodeEStateStoreOptions): Promise<NodeEStateStore> {
    const unix = o.listen.startsWith('unix:') ? o.listen.slice('unix:'.length) : undefined;
    let where: Pick<EStateNodeOptions, 'host' | 'port' | 'socketPath'>;
    if (unix !== undefined) where = { socketPath: unix };
    else {
      const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(o.listen);
      if (m === null) throw new StateError(`stateStore.estate.listen: '${o.listen}' is neither host:port nor unix:/path`);
      where = { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) };
    }
    const node = await EStateNode.start({
      id: o.id,
      ...where,
      ...(o.tls === undefined ? {} : { tls: o.tls }),
      ...(o.admit === undefined ? {} : { admit: o.admit }),
      timeoutMs: o.timeoutMs ?? 1000,
      retries: 1,
      peers: o.members.map((m) => ({ id: m.node, address: m.address })),
    });
    return new NodeEStateStore(o, node);
  }

  /** what the node tells the controller: two nodes meet only in the same group */
  describe(): string {
    return `estate group ${this.#o.group}`;
  }

  /** where this node's E-State node serves */
  get address(): string {
    return this.#node.address;
  }

  /** Takes the records into this node's local view. */
  async stage(instance: string, handoverId: number, entries: readonly FlowStateEntry[]): Promise<void> {
    this.#node.setMany(entries.map((e) => [stagedItemKey(instance, handoverId, e.flow), e.value] as const));
  }

  /**
   * The records `instance` staged for these flows, from whichever member
   * holds them (this node included): every member is asked at once, and a
   * member that does not answer is named if some record is missing.
   */
  async obtain(instance: string, handoverId: number, flows: readonly FlowKey[]): Promise<{ found: FlowStateEntry[]; missing: FlowKey[] }> {
    const keys = flows.map((f) => stagedItemKey(instance, handoverId, f));
    const values = new Map<string, Buffer>();
    for (const k of keys) {
      const v = this.#node.get(k);
      if (Buffer.isBuffer(v)) values.set(k, v);
    }
    const unreached: string[] = [];
    if (values.size < keys.length) {
      const wanted = keys.filter((k) => !values.has(k));
      // done when every record is in, or every member has answered or failed: a member that is down
      // costs nothing when the one that staged the records answers
      await new Promise<void>((resolve) => {
        let left = this.#o.members.length;
        if (left === 0) resolve();
        for (const m of this.#o.members)
          this.#node
            .fetch(m.node, { keys: wanted })
            .then(
              (items) => {
                for (const item of items) if (Buffer.isBuffer(item.value)) values.set(item.key, item.value);
              },
              (e: unknown) => void unreached.push(`${m.node} (${e instanceof Error ? e.message : String(e)})`),
            )
            .finally(() => {
              if (--left === 0 || values.size === keys.length) resolve();
            });
      });
    }
    const found: FlowStateEntry[] = [];
    const missing: FlowKey[] = [];
    flows.forEach((flow, i) => {
      const v = values.get(keys[i]!);
      if (v === undefined) missing.push(flow);
      else found.push({ flow, value: v });
    });
    if (missing.length > 0 && unreached.length > 0) throw new StateError(`${this.describe()}: ${missing.length} of the ${flows.length} records ${instance} staged are not at any member that answered; not reached: ${unreached.join('; ')}`);
    return { found, missing };
  }

  /** Forgets what `instance` staged here under the handover (these flows', or all). Returns the items deleted. */
  async discard(instance: string, handoverId: number, flows: readonly FlowKey[] | 'all'): Promise<number> {
    const keys = flows === 'all' ? this.#node.keys(stagedPrefix(instance, handoverId)) : flows.map((f) => stagedItemKey(instance, handoverId, f));
    let n = 0;
    for (const k of keys) if (this.#node.del(k)) n++;
    return n;
  }

  async close(): Promise<void> {
    await this.#node.close();
  }
}
