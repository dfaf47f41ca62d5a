/**
 * Shared pieces of the program tables (test/programs): frames with probes
 * and shims, per-CPU sums, interfaces whose ifindexes a test run can name as
 * its ingress port, and the probe_sink fixture's log.
 */
import type { Test } from 'tap';
import { ifindexOf, u32, type BpfCollection } from '../../src/bpf/index.js';
import { createIdleInterface } from '../../src/net/iproute.js';
import { udpFrame, ethernet, checksum, ETH_P_IPV4, type UdpFrameFields } from '../../src/net/frame.js';
import { sharpProbeCodec, SHARP_PROBE_MAGIC } from '../../src/generated/abi.js';
import { testNetns } from './netns.js';

export const MAC_A = '02:00:00:00:01:0a';
export const MAC_B = '02:00:00:00:01:0b';
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;
/** UDP payload offset of a frame without IP options: Ethernet 14 + IPv4 20 + UDP 8 */
export const PAYLOAD_OFF = 42;
/** offset of the probe's big-endian stamp in such a frame */
export const STAMP_OFF = PAYLOAD_OFF + 16;
/** offset of the UDP checksum in such a frame */
export const UDP_CSUM_OFF = 14 + 20 + 6;

export interface ProbeFields {
  flow?: number;
  seq?: bigint;
  stamp?: bigint;
  txNs?: bigint;
  /** bytes appended after the 32-byte probe */
  extra?: number;
  magic?: number;
}

/** The UDP payload of a probe: the 32-byte sharp_probe (big endian), then `extra` bytes. */
export function probePayload(p: ProbeFields = {}): Buffer {
  const probe = sharpProbeCodec.encode({ magic: p.magic ?? SHARP_PROBE_MAGIC, flow: p.flow ?? 0, seq: p.seq ?? 0n, stamp: p.stamp ?? 0n, tx_ns: p.txNs ?? 0n });
  return Buffer.concat([probe, Buffer.alloc(p.extra ?? 0, 0x5a)]);
}

export interface FlowAddr {
  srcIp: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
}

export const FLOW: FlowAddr = { srcIp: '10.0.1.1', dstIp: '10.0.2.1', srcPort: 40000, dstPort: 9000 };

/** A complete Ethernet/IPv4/UDP probe frame (checksums complete unless udpChecksum is false). */
export function probeFrame(p: ProbeFields = {}, flow: FlowAddr = FLOW, extra: Partial<UdpFrameFields> = {}): Buffer {
  return udpFrame({ srcMac: MAC_A, dstMac: MAC_B, ...flow, payload: probePayload(p), ...extra });
}

/** A UDP frame with an arbitrary payload. */
export function plainUdp(payload: Buffer, flow: FlowAddr = FLOW, extra: Partial<UdpFrameFields> = {}): Buffer {
  return udpFrame({ srcMac: MAC_A, dstMac: MAC_B, ...flow, payload, ...extra });
}

/** A non-IP frame of the given EtherType (minimum Ethernet payload). */
export function otherFrame(etherType: number, payloadLen = 46): Buffer {
  return ethernet({ dst: MAC_B, src: MAC_A, etherType, payload: Buffer.alloc(payloadLen, 0x33) });
}

/**
 * A raw IPv4 frame with header fields given directly (IP header checksum
 * computed, L4 bytes taken as they are), for malformed, fragment and option cases.
 */
export function rawIpv4(o: { ihl?: number; version?: number; protocol: number; fragOff?: number; l4: Buffer; options?: Buffer; srcIp?: string; dstIp?: string }): Buffer {
  const opts = o.options ?? Buffer.alloc(0);
  const ip = Buffer.alloc(20 + opts.length);
  ip[0] = ((o.version ?? 4) << 4) | (o.ihl ?? (20 + opts.length) / 4);
  ip.writeUInt16BE(ip.length + o.l4.length, 2);
  ip.writeUInt16BE(o.fragOff ?? 0, 6);
  ip[8] = 64;
  ip[9] = o.protocol;
  Buffer.from((o.srcIp ?? FLOW.srcIp).split('.').map(Number)).copy(ip, 12);
  Buffer.from((o.dstIp ?? FLOW.dstIp).split('.').map(Number)).copy(ip, 16);
  opts.copy(ip, 20);
  ip.writeUInt16BE(checksum(ip), 10);
  return ethernet({ dst: MAC_B, src: MAC_A, etherType: ETH_P_IPV4, payload: Buffer.concat([ip, o.l4]) });
}

/**
 * The frame with a shim inserted after the MACs, written out byte by byte
 * (not with the generated codec, so the layout is checked independently):
 * 0x82 0x1C, tag = phase << 14 | hid (big endian), then the original EtherType.
 */
export function withShim(frame: Buffer, phase: number, hid: number): Buffer {
  const tag = ((phase << 14) | hid) & 0xffff;
  return Buffer.concat([frame.subarray(0, 12), Buffer.from([0x82, 0x1c, tag >> 8, tag & 0xff]), frame.subarray(12)]);
}

/** The frame with its stamp replaced (no checksum update). */
export function withStamp(frame: Buffer, stamp: bigint): Buffer {
  const b = Buffer.from(frame);
  b.writeBigUInt64BE(stamp, STAMP_OFF);
  return b;
}

/** Field-wise sum of per-CPU struct values (bigint fields; arrays summed element-wise). */
export function sumPerCpu<T extends object>(rows: readonly T[] | undefined): T {
  const out: Record<string, unknown> = {};
  for (const row of rows ?? []) {
    for (const [k, v] of Object.entries(row)) {
      if (typeof v === 'bigint') out[k] = ((out[k] as bigint | undefined) ?? 0n) + v;
      else if (Array.isArray(v)) {
        const acc = (out[k] as bigint[] | undefined) ?? v.map(() => 0n);
        out[k] = acc.map((a, i) => a + BigInt(v[i] as bigint | number));
      } else out[k] ??= v;
    }
  }
  return out as T;
}

/** Expected struct of counters: every bigint field 0 unless given. */
export function counters<T extends object>(zero: T, given: Partial<Record<keyof T, bigint>>): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(zero)) if (typeof v === 'bigint') out[k] = (given as Record<string, bigint | undefined>)[k] ?? 0n;
  return out as T;
}

export interface TestPorts {
  netns: string;
  /** interface name -> ifindex inside netns */
  ifindex: Record<string, number>;
}

/**
 * A fresh namespace holding idle interfaces (veth pairs left down) whose
 * ifindexes a test run names as its ingress interface (xdp_md.ingress_ifindex
 * is resolved in the namespace of the run). Removed on teardown.
 */
export function testPorts(t: Test, tag: string, names: readonly string[]): TestPorts {
  const netns = testNetns(t, tag);
  const ifindex: Record<string, number> = { lo: ifindexOf('lo', netns) };
  for (const n of names) {
    createIdleInterface(n, netns);
    ifindex[n] = ifindexOf(n, netns);
  }
  return { netns, ifindex };
}

export interface SinkRecord {
  len: number;
  /** the first bytes of the frame (up to 128) */
  data: Buffer;
}

/** Frames the probe_sink fixture recorded, in arrival order. */
export function sinkRecords(sink: BpfCollection): SinkRecord[] {
  const n = Number(sink.map('sink_count').lookup(u32.encode(0))!.readBigUInt64LE(0));
  const log = sink.map('sink_log');
  const out: SinkRecord[] = [];
  for (let i = 0; i < Math.min(n, 256); i++) {
    const v = log.lookup(u32.encode(i))!;
    out.push({ len: v.readUInt32LE(0), data: Buffer.from(v.subarray(8, 8 + v.readUInt32LE(4))) });
  }
  return out;
}

export function sinkCount(sink: BpfCollection): number {
  return Number(sink.map('sink_count').lookup(u32.encode(0))!.readBigUInt64LE(0));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
