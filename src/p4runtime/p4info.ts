/**
 * The P4Info of a P4 program: the contract between the program and its
 * controller, resolved once. Reads the protobuf JSON mapping that p4c writes
 * (`--p4runtime-files x.p4info.json`: camelCase names, 64-bit integers as
 * strings, enums by name) and looks objects up by full name
 * ("SharpIngress.rules_exact"), alias ("rules_exact") or id.
 */
import { readFileSync } from 'node:fs';
import protobuf from 'protobufjs';
import { P4InfoError } from './errors.js';
import { messageType, normalize, type P4InfoMsg } from './proto.js';

export type MatchType = 'EXACT' | 'LPM' | 'TERNARY' | 'RANGE' | 'OPTIONAL';
export type ActionScope = 'TABLE_AND_DEFAULT' | 'TABLE_ONLY' | 'DEFAULT_ONLY';
export type CounterUnit = 'UNSPECIFIED' | 'BYTES' | 'PACKETS' | 'BOTH';

export interface Preamble {
  id: number;
  name: string;
  alias: string;
  annotations: readonly string[];
}
export interface MatchFieldInfo {
  id: number;
  name: string;
  bitwidth: number;
  matchType: MatchType;
}
export interface ActionRefInfo {
  id: number;
  scope: ActionScope;
}
export interface TableInfo extends Preamble {
  matchFields: readonly MatchFieldInfo[];
  actionRefs: readonly ActionRefInfo[];
  /** the const default action, when the program fixes it */
  constDefaultActionId: number | undefined;
  size: number;
  isConstTable: boolean;
}
export interface ActionParamInfo {
  id: number;
  name: string;
  bitwidth: number;
}
export interface ActionInfo extends Preamble {
  params: readonly ActionParamInfo[];
}
export interface CounterInfo extends Preamble {
  unit: CounterUnit;
  size: number;
}
export interface PacketMetadataFieldInfo {
  id: number;
  name: string;
  bitwidth: number;
}
export interface ControllerPacketMetadataInfo extends Preamble {
  metadata: readonly PacketMetadataFieldInfo[];
}

type Obj = Record<string, unknown>;

const arr = (v: unknown): Obj[] => (Array.isArray(v) ? (v as Obj[]) : []);
const obj = (v: unknown): Obj => (v !== null && typeof v === 'object' ? (v as Obj) : {});
const num = (v: unknown): number => (v === undefined ? 0 : Number(v));
const str = (v: unknown): string => (v === undefined ? '' : String(v));

function preamble(o: Obj, kind: string): Preamble {
  const p = obj(o['preamble']);
  const id = num(p['id']);
  const name = str(p['name']);
  if (id === 0 || name === '') throw new P4InfoError(`P4Info: a ${kind} without id or name`);
  return { id, name, alias: str(p['alias']) || name, annotations: (p['annotations'] as string[] | undefined) ?? [] };
}

/** The P4Info objects of one kind, by full name, alias and id. */
export class P4InfoObjects<T extends Preamble> {
  readonly #byName = new Map<string, T>();
  readonly #byAlias = new Map<string, T>();
  readonly #byId = new Map<number, T>();
  constructor(
    readonly kind: string,
    readonly all: readonly T[],
  ) {
    for (const x of all) {
      this.#byName.set(x.name, x);
      this.#byAlias.set(x.alias, x);
      this.#byId.set(x.id, x);
    }
  }
  get(name: string): T {
    const x = this.#byName.get(name) ?? this.#byAlias.get(name);
    if (x) return x;
    const known = this.all.map((k) => (k.alias !== k.name ? `${k.name} (${k.alias})` : k.name));
    throw new P4InfoError(`P4Info has no ${this.kind} '${name}'; known ${this.kind}s: ${known.length > 0 ? known.join(', ') : '(none)'}`);
  }
  byId(id: number): T {
    const x = this.#byId.get(id);
    if (x) return x;
    throw new P4InfoError(`P4Info has no ${this.kind} with id ${id}; known ids: ${this.all.map((k) => `${k.id} (${k.name})`).join(', ') || '(none)'}`);
  }
  has(nameOrId: string | number): boolean {
    return typeof nameOrId === 'number' ? this.#byId.has(nameOrId) : this.#byName.has(nameOrId) || this.#byAlias.has(nameOrId);
  }
}

const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function snakeKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(snakeKeys);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v as Obj).map(([k, x]) => [snake(k), snakeKeys(x)]));
  return v;
}

// Paths of fields in `v` that the message type `t` does not declare (they
// would be dropped when the P4Info is re-encoded).
function unknownFields(t: protobuf.Type, v: Obj, path: string, out: string[]): void {
  for (const [k, x] of Object.entries(v)) {
    const f = t.fields[k];
    if (!f) {
      out.push(`${path}${k}`);
      continue;
    }
    f.resolve();
    if (f.resolvedType instanceof protobuf.Type) {
      const sub = f.resolvedType;
      if (Array.isArray(x)) x.forEach((e, i) => unknownFields(sub, obj(e), `${path}${k}[${i}].`, out));
      else unknownFields(sub, obj(x), `${path}${k}.`, out);
    }
  }
}

export class P4Info {
  readonly tables: P4InfoObjects<TableInfo>;
  readonly actions: P4InfoObjects<ActionInfo>;
  readonly counters: P4InfoObjects<CounterInfo>;
  readonly packetMetadata: P4InfoObjects<ControllerPacketMetadataInfo>;
  /**
   * Fields of the source P4Info that this client's P4Info definition lacks:
   * they are not sent with SetForwardingPipelineConfig (empty for the P4Info
   * of sharp.p4).
   */
  readonly unknownFields: readonly string[];
  readonly #message: P4InfoMsg;

  private constructor(message: P4InfoMsg, unknown: string[]) {
    this.#message = message;
    this.unknownFields = unknown;
    const tables = arr(message['tables']).map((t): TableInfo => {
      const p = preamble(t, 'table');
      return {
        ...p,
        matchFields: arr(t['match_fields']).map((m) => {
          const matchType = str(m['match_type']);
          if (!['EXACT', 'LPM', 'TERNARY', 'RANGE', 'OPTIONAL'].includes(matchType)) {
            throw new P4InfoError(`P4Info: table ${p.name} field ${str(m['name'])} has match type ${matchType || str(m['other_match_type']) || '(none)'}, which this client does not support`);
          }
          return { id: num(m['id']), name: str(m['name']), bitwidth: num(m['bitwidth']), matchType: matchType as MatchType };
        }),
        actionRefs: arr(t['action_refs']).map((r) => ({ id: num(r['id']), scope: (str(r['scope']) || 'TABLE_AND_DEFAULT') as ActionScope })),
        constDefaultActionId: t['const_default_action_id'] === undefined ? undefined : num(t['const_default_action_id']),
        size: num(t['size']),
        isConstTable: t['is_const_table'] === true,
      };
    });
    const actions = arr(message['actions']).map(
      (a): ActionInfo => ({
        ...preamble(a, 'action'),
        params: arr(a['params']).map((x) => ({ id: num(x['id']), name: str(x['name']), bitwidth: num(x['bitwidth']) })),
      }),
    );
    const counters = arr(message['counters']).map(
      (c): CounterInfo => ({
        ...preamble(c, 'counter'),
        unit: (str(obj(c['spec'])['unit']) || 'UNSPECIFIED') as CounterUnit,
        size: num(c['size']),
      }),
    );
    const cpm = arr(message['controller_packet_metadata']).map(
      (c): ControllerPacketMetadataInfo => ({
        ...preamble(c, 'controller packet metadata'),
        metadata: arr(c['metadata']).map((x) => ({ id: num(x['id']), name: str(x['name']), bitwidth: num(x['bitwidth']) })),
      }),
    );
    this.tables = new P4InfoObjects('table', tables);
    this.actions = new P4InfoObjects('action', actions);
    this.counters = new P4InfoObjects('counter', counters);
    this.packetMetadata = new P4InfoObjects('controller packet metadata', cpm);
    for (const t of tables) {
      for (const r of t.actionRefs) {
        if (!this.actions.has(r.id)) throw new P4InfoError(`P4Info: table ${t.name} refers to action id ${r.id}, which is not in the P4Info`);
      }
    }
  }

  /** A P4Info in the protobuf JSON mapping (camelCase, as p4c writes it; snake_case is accepted too). */
  static fromJson(json: unknown): P4Info {
    if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new P4InfoError('P4Info: expected a JSON object');
    const snaked = snakeKeys(json) as Obj;
    let message: P4InfoMsg;
    try {
      message = normalize<P4InfoMsg>('p4.config.v1.P4Info', snaked);
    } catch (e) {
      throw new P4InfoError(`P4Info: not a valid P4Info (${e instanceof Error ? e.message : String(e)})`, { cause: e });
    }
    const unknown: string[] = [];
    unknownFields(messageType('p4.config.v1.P4Info'), snaked, '', unknown);
    return new P4Info(message, unknown);
  }

  /** Reads a P4Info JSON file (e.g. p4/build/sharp.p4info.json). */
  static load(path: string): P4Info {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new P4InfoError(`P4Info: cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new P4InfoError(`P4Info: ${path} is not JSON: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    return P4Info.fromJson(json);
  }

  /** A table by full name or alias. */
  table(name: string): TableInfo {
    return this.tables.get(name);
  }
  tableById(id: number): TableInfo {
    return this.tables.byId(id);
  }
  /** An action by full name or alias. */
  action(name: string): ActionInfo {
    return this.actions.get(name);
  }
  actionById(id: number): ActionInfo {
    return this.actions.byId(id);
  }
  /** A (indirect) counter by full name or alias. */
  counter(name: string): CounterInfo {
    return this.counters.get(name);
  }
  counterById(id: number): CounterInfo {
    return this.counters.byId(id);
  }
  /** The packet-in or packet-out header (by its @controller_header name). */
  controllerPacketMetadata(name: string): ControllerPacketMetadataInfo {
    return this.packetMetadata.get(name);
  }
  controllerPacketMetadataById(id: number): ControllerPacketMetadataInfo {
    return this.packetMetadata.byId(id);
  }

  /** The p4.config.v1.P4Info message (plain object, snake_case) for SetForwardingPipelineConfig. */
  toMessage(): P4InfoMsg {
    return structuredClone(this.#message);
  }
}
