/**
 * Captured frames into a pcapng file, written as they come: one pcapng
 * interface per node object, port and direction ("s1:s1-vnf1:out"), the
 * frame's bytes as on the wire, and a packet comment with what the program
 * did ("sharp: program=switch node=s1 port=s1-vnf1 dir=out verdict=marked-pre
 * hid=3 rule=1 in=s1-client"), which tshark shows as frame.comment.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { PcapngWriter } from '../net/pcapng.js';
import type { NodeCapturedFrame } from '../node/capture-service.js';

export function frameComment(f: NodeCapturedFrame): string {
  const parts = [
    `program=${f.program}`,
    `node=${f.object}`,
    `port=${f.port}`,
    `dir=${f.direction}`,
    `verdict=${f.verdict}`,
    ...(f.reason === undefined ? [] : [`reason=${f.reason}`]),
    ...(f.handoverId === undefined ? [] : [`hid=${f.handoverId}`]),
    ...(f.ruleId === undefined ? [] : [`rule=${f.ruleId}`]),
    ...(f.ring === undefined ? [] : [`ring=${f.ring}`, `pos=${f.pos ?? 0}`]),
    ...(f.inPort === undefined ? [] : [`in=${f.inPort}`]),
  ];
  return `sharp: ${parts.join(' ')}`;
}

export const interfaceName = (f: Pick<NodeCapturedFrame, 'object' | 'port' | 'direction'>): string => `${f.object}:${f.port}:${f.direction}`;

/** A pcapng file being written; every addAll() reaches the file before it returns. */
export class PcapngCaptureFile {
  readonly #w: PcapngWriter;
  readonly #ifaces = new Map<string, number>();
  #fd: number | undefined;
  #frames = 0;

  constructor(
    readonly path: string,
    readonly snaplen: number,
  ) {
    this.#fd = openSync(path, 'w', 0o644);
    this.#w = new PcapngWriter('sharpctl capture');
    this.#flush();
  }

  #flush(): void {
    if (this.#fd !== undefined) writeSync(this.#fd, this.#w.takeChunks());
  }

  /** Adds frames; they reach the file before it returns. */
  addAll(fs: readonly NodeCapturedFrame[]): void {
    for (const f of fs) this.#add(f);
    this.#flush();
  }

  #add(f: NodeCapturedFrame): void {
    const name = interfaceName(f);
    let id = this.#ifaces.get(name);
    if (id === undefined) this.#ifaces.set(name, (id = this.#w.addInterface({ name, snapLen: this.snaplen })));
    this.#w.addPacket({ interfaceId: id, timestampNs: f.tsUnixNs, data: f.data, originalLength: f.origLen, comment: frameComment(f) });
    this.#frames++;
  }

  get frames(): number {
    return this.#frames;
  }

  get interfaces(): string[] {
    return [...this.#ifaces.keys()];
  }

  close(): void {
    if (this.#fd === undefined) return;
    closeSync(this.#fd);
    this.#fd = undefined;
  }
}
