/**
 * A pcapng writer (little endian, one section): interfaces of link type
 * Ethernet with their names, and Enhanced Packet Blocks with an optional
 * comment (opt_comment), which Wireshark shows as frame.comment. Enough for
 * `sharpctl capture` and for tests that feed tshark real frames.
 *
 * Format: draft-ietf-opsawg-pcapng (SHB 0x0A0D0D0A, IDB 1, EPB 6).
 */

export const LINKTYPE_ETHERNET = 1;

const BT_SHB = 0x0a0d0d0a;
const BT_IDB = 0x00000001;
const BT_EPB = 0x00000006;
const BYTE_ORDER_MAGIC = 0x1a2b3c4d;
const OPT_ENDOFOPT = 0;
const OPT_COMMENT = 1;
const IF_NAME = 2;
const IF_TSRESOL = 9;
const SHB_USERAPPL = 4;

export class PcapngError extends Error {
  override name = 'PcapngError';
}

export interface PcapngInterface {
  name: string;
  /** bytes kept of each frame (0: no limit) */
  snapLen?: number;
  linkType?: number;
}

export interface PcapngPacket {
  /** index returned by addInterface */
  interfaceId: number;
  /** nanoseconds since the Unix epoch (the interfaces have if_tsresol 9) */
  timestampNs: bigint;
  /** the bytes captured (possibly cut to the snap length) */
  data: Buffer;
  /** the frame's length on the wire (default data.length) */
  originalLength?: number;
  comment?: string;
}

const pad4 = (n: number): number => (n + 3) & ~3;

function option(code: number, value: Buffer): Buffer {
  const b = Buffer.alloc(4 + pad4(value.length));
  b.writeUInt16LE(code, 0);
  b.writeUInt16LE(value.length, 2);
  value.copy(b, 4);
  return b;
}

function options(opts: Buffer[]): Buffer {
  if (opts.length === 0) return Buffer.alloc(0);
  return Buffer.concat([...opts, option(OPT_ENDOFOPT, Buffer.alloc(0))]);
}

function block(type: number, body: Buffer): Buffer {
  const total = 12 + body.length;
  const b = Buffer.alloc(total);
  b.writeUInt32LE(type, 0);
  b.writeUInt32LE(total, 4);
  body.copy(b, 8);
  b.writeUInt32LE(total, total - 4);
  return b;
}

/** Builds a pcapng byte stream block by block; chunks() can be written out as they come. */
export class PcapngWriter {
  readonly #interfaces: Required<PcapngInterface>[] = [];
  readonly #out: Buffer[] = [];
  #packets = 0;

  constructor(application = 'sharpctl') {
    const body = Buffer.alloc(16);
    body.writeUInt32LE(BYTE_ORDER_MAGIC, 0);
    body.writeUInt16LE(1, 4); // major
    body.writeUInt16LE(0, 6); // minor
    body.writeBigInt64LE(-1n, 8); // section length unknown
    this.#out.push(block(BT_SHB, Buffer.concat([body, options([option(SHB_USERAPPL, Buffer.from(application, 'utf8'))])])));
  }

  /** Adds an interface description; returns its id for packets. */
  addInterface(i: PcapngInterface): number {
    const snapLen = i.snapLen ?? 0;
    if (!Number.isInteger(snapLen) || snapLen < 0 || snapLen > 0xffffffff) throw new PcapngError(`snap length ${snapLen} out of range`);
    const body = Buffer.alloc(8);
    body.writeUInt16LE(i.linkType ?? LINKTYPE_ETHERNET, 0);
    body.writeUInt32LE(snapLen, 4);
    this.#out.push(block(BT_IDB, Buffer.concat([body, options([option(IF_NAME, Buffer.from(i.name, 'utf8')), option(IF_TSRESOL, Buffer.from([9]))])])));
    this.#interfaces.push({ name: i.name, snapLen, linkType: i.linkType ?? LINKTYPE_ETHERNET });
    return this.#interfaces.length - 1;
  }

  addPacket(p: PcapngPacket): void {
    const itf = this.#interfaces[p.interfaceId];
    if (itf === undefined) throw new PcapngError(`no interface ${p.interfaceId} (${this.#interfaces.length} added)`);
    const data = itf.snapLen > 0 && p.data.length > itf.snapLen ? p.data.subarray(0, itf.snapLen) : p.data;
    const orig = p.originalLength ?? p.data.length;
    const head = Buffer.alloc(20);
    head.writeUInt32LE(p.interfaceId, 0);
    head.writeUInt32LE(Number((p.timestampNs >> 32n) & 0xffffffffn), 4);
    head.writeUInt32LE(Number(p.timestampNs & 0xffffffffn), 8);
    head.writeUInt32LE(data.length, 12);
    head.writeUInt32LE(orig, 16);
    const padded = Buffer.alloc(pad4(data.length));
    data.copy(padded);
    const opts = p.comment === undefined ? [] : [option(OPT_COMMENT, Buffer.from(p.comment, 'utf8'))];
    this.#out.push(block(BT_EPB, Buffer.concat([head, padded, options(opts)])));
    this.#packets++;
  }

  get packets(): number {
    return this.#packets;
  }

  /** Takes the blocks written since the last call (the first call includes the section header). */
  takeChunks(): Buffer {
    const b = Buffer.concat(this.#out);
    this.#out.length = 0;
    return b;
  }
}
