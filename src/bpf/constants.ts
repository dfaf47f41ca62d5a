/** Kernel UAPI numbers (linux/bpf.h, linux/if_link.h) used by the binding. */

export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PROG_ARRAY: 3,
  PERF_EVENT_ARRAY: 4,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  DEVMAP: 14,
  CPUMAP: 16,
  XSKMAP: 17,
  DEVMAP_HASH: 25,
  RINGBUF: 27,
} as const;

export const PERCPU_MAP_TYPES: ReadonlySet<number> = new Set([MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH]);

export const ProgType = {
  SCHED_CLS: 3,
  XDP: 6,
} as const;

export const MapUpdate = {
  ANY: 0,
  NOEXIST: 1,
  EXIST: 2,
  LOCK: 4,
} as const;

export const XdpFlags = {
  UPDATE_IF_NOEXIST: 1 << 0,
  SKB_MODE: 1 << 1,
  DRV_MODE: 1 << 2,
  HW_MODE: 1 << 3,
  REPLACE: 1 << 4,
} as const;

export const XdpAction = {
  ABORTED: 0,
  DROP: 1,
  PASS: 2,
  TX: 3,
  REDIRECT: 4,
} as const;

export const TcAction = {
  OK: 0,
  SHOT: 2,
  REDIRECT: 7,
} as const;

/** BPF_PROG_TEST_RUN flags. */
export const TestRunFlag = {
  RUN_ON_CPU: 1 << 0,
  XDP_LIVE_FRAMES: 1 << 1,
} as const;

/** struct xdp_md, as passed in ctx_in of an XDP test run. */
export function xdpMd(fields: { dataLen?: number; ingressIfindex?: number; rxQueueIndex?: number; egressIfindex?: number }): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(0, 0); // data: offset of packet data in data_in (0 = no metadata)
  b.writeUInt32LE(fields.dataLen ?? 0, 4); // data_end
  b.writeUInt32LE(0, 8); // data_meta
  b.writeUInt32LE(fields.ingressIfindex ?? 0, 12);
  b.writeUInt32LE(fields.rxQueueIndex ?? 0, 16);
  b.writeUInt32LE(fields.egressIfindex ?? 0, 20);
  return b;
}
