/**
 * Codecs between JS values and the bytes of structs shared with the kernel.
 * Struct layouts are never written by hand: they come from the BTF of the
 * compiled shared header (src/generated/abi.ts, made by ebpf/tools/gen-abi.mjs).
 */

export interface Codec<T> {
  readonly size: number;
  encode(value: T): Buffer;
  decode(bytes: Buffer, offset?: number): T;
}

/** One member of a struct as the generator describes it. */
export interface FieldLayout {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
  /** scalar kinds; 'bytes' for u8 arrays and opaque members (e.g. bpf_spin_lock) */
  readonly kind: 'u8' | 'u16' | 'u32' | 'u64' | 'be16' | 'be32' | 'be64' | 's32' | 's64' | 'bytes' | 'array';
  /** for kind 'array': element kind and count */
  readonly element?: 'u16' | 'u32' | 'u64' | 'be16' | 'be32';
  readonly count?: number;
}

export interface StructLayout {
  readonly name: string;
  readonly size: number;
  readonly fields: readonly FieldLayout[];
}

export type FieldValue = number | bigint | Buffer | number[] | bigint[];

const ELEMENT_SIZE = { u16: 2, u32: 4, u64: 8, be16: 2, be32: 4 } as const;

function readScalar(b: Buffer, off: number, kind: string): number | bigint {
  switch (kind) {
    case 'u8':
      return b.readUInt8(off);
    case 'u16':
      return b.readUInt16LE(off);
    case 'u32':
      return b.readUInt32LE(off);
    case 's32':
      return b.readInt32LE(off);
    case 'u64':
      return b.readBigUInt64LE(off);
    case 's64':
      return b.readBigInt64LE(off);
    case 'be16':
      return b.readUInt16BE(off);
    case 'be32':
      return b.readUInt32BE(off);
    case 'be64':
      return b.readBigUInt64BE(off);
    default:
      throw new Error(`no scalar reader for ${kind}`);
  }
}

function writeScalar(b: Buffer, off: number, kind: string, v: number | bigint): void {
  switch (kind) {
    case 'u8':
      b.writeUInt8(Number(v), off);
      return;
    case 'u16':
      b.writeUInt16LE(Number(v), off);
      return;
    case 'u32':
      b.writeUInt32LE(Number(v), off);
      return;
    case 's32':
      b.writeInt32LE(Number(v), off);
      return;
    case 'u64':
      b.writeBigUInt64LE(BigInt(v), off);
      return;
    case 's64':
      b.writeBigInt64LE(BigInt(v), off);
      return;
    case 'be16':
      b.writeUInt16BE(Number(v), off);
      return;
    case 'be32':
      b.writeUInt32BE(Number(v), off);
      return;
    case 'be64':
      b.writeBigUInt64BE(BigInt(v), off);
      return;
    default:
      throw new Error(`no scalar writer for ${kind}`);
  }
}

/** A struct codec: fields left out (padding, say) encode as zero. */
export interface StructCodec<T> extends Codec<T> {
  readonly layout: StructLayout;
  encode(value: Partial<T>): Buffer;
}

/** A codec for a generated struct layout. `T` is the matching generated interface. */
export function structCodec<T extends object>(layout: StructLayout): StructCodec<T> {
  return {
    size: layout.size,
    layout,
    encode(value: Partial<T>): Buffer {
      const b = Buffer.alloc(layout.size);
      const rec = value as Record<string, FieldValue | undefined>;
      for (const f of layout.fields) {
        const v = rec[f.name];
        if (v === undefined) continue;
        if (f.kind === 'bytes') {
          if (!Buffer.isBuffer(v)) throw new TypeError(`${layout.name}.${f.name} must be a Buffer`);
          if (v.length > f.size) throw new RangeError(`${layout.name}.${f.name} holds at most ${f.size} bytes, got ${v.length}`);
          v.copy(b, f.offset);
        } else if (f.kind === 'array') {
          if (!Array.isArray(v)) throw new TypeError(`${layout.name}.${f.name} must be an array`);
          const es = ELEMENT_SIZE[f.element!];
          v.forEach((x, i) => writeScalar(b, f.offset + i * es, f.element!, x));
        } else {
          if (typeof v !== 'number' && typeof v !== 'bigint') throw new TypeError(`${layout.name}.${f.name} must be a number`);
          writeScalar(b, f.offset, f.kind, v);
        }
      }
      return b;
    },
    decode(bytes: Buffer, offset = 0): T {
      if (bytes.length - offset < layout.size) throw new RangeError(`${layout.name} needs ${layout.size} bytes, got ${bytes.length - offset}`);
      const out: Record<string, FieldValue> = {};
      for (const f of layout.fields) {
        const at = offset + f.offset;
        if (f.kind === 'bytes') out[f.name] = Buffer.from(bytes.subarray(at, at + f.size));
        else if (f.kind === 'array') {
          const es = ELEMENT_SIZE[f.element!];
          const arr: (number | bigint)[] = [];
          for (let i = 0; i < (f.count ?? 0); i++) arr.push(readScalar(bytes, at + i * es, f.element!));
          out[f.name] = arr as number[] | bigint[];
        } else out[f.name] = readScalar(bytes, at, f.kind);
      }
      return out as T;
    },
  };
}

export const u32: Codec<number> = {
  size: 4,
  encode: (v) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    return b;
  },
  decode: (b, o = 0) => b.readUInt32LE(o),
};

export const u64: Codec<bigint> = {
  size: 8,
  encode: (v) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    return b;
  },
  decode: (b, o = 0) => b.readBigUInt64LE(o),
};

/** Raw bytes of a fixed size. */
export function bytes(size: number): Codec<Buffer> {
  return {
    size,
    encode: (v) => {
      if (v.length !== size) throw new RangeError(`expected ${size} bytes, got ${v.length}`);
      return v;
    },
    decode: (b, o = 0) => Buffer.from(b.subarray(o, o + size)),
  };
}
