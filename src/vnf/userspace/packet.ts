/**
 * The IPv4 packets a TUN device hands the userspace VNF (IFF_NO_PI: the
 * packet starts at its IP header): the flow they belong to, where their
 * transport payload is, and the UDP checksum after the payload changed.
 */
import type { FlowKey } from '../../dataplane/types.js';
import { IPPROTO_TCP, IPPROTO_UDP, onesSum } from '../../net/frame.js';

export interface ParsedPacket {
  flow: FlowKey;
  /** offset of the transport header */
  l4: number;
  /** offset and length of the transport payload (UDP: after the 8-byte header; TCP: after its options; others: after the IP header) */
  payloadOffset: number;
  payloadLength: number;
}

const ipv4 = (b: Buffer, off: number): string => `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;

/**
 * The flow and payload of an IPv4 packet, or undefined for anything else
 * (IPv6, truncated headers, fragments after the first: their ports are not
 * in them).
 */
export function parseIpv4(pkt: Buffer, length = pkt.length): ParsedPacket | undefined {
  if (length < 20 || pkt[0]! >> 4 !== 4) return undefined;
  const ihl = (pkt[0]! & 0x0f) * 4;
  const total = pkt.readUInt16BE(2);
  if (ihl < 20 || total < ihl || total > length) return undefined;
  const fragOffset = pkt.readUInt16BE(6) & 0x1fff;
  const proto = pkt[9]!;
  const src = ipv4(pkt, 12);
  const dst = ipv4(pkt, 16);
  if (fragOffset !== 0) return undefined;
  if (proto === IPPROTO_UDP || proto === IPPROTO_TCP) {
    const minL4 = proto === IPPROTO_UDP ? 8 : 20;
    if (total < ihl + minL4) return undefined;
    const l4Len = proto === IPPROTO_UDP ? 8 : (pkt[ihl + 12]! >> 4) * 4;
    if (l4Len < minL4 || total < ihl + l4Len) return undefined;
    return { flow: { src, dst, sport: pkt.readUInt16BE(ihl), dport: pkt.readUInt16BE(ihl + 2), proto }, l4: ihl, payloadOffset: ihl + l4Len, payloadLength: total - ihl - l4Len };
  }
  return { flow: { src, dst, sport: 0, dport: 0, proto }, l4: ihl, payloadOffset: ihl, payloadLength: total - ihl };
}

/**
 * Recomputes the UDP checksum of a parsed IPv4/UDP packet in place (over
 * the pseudo-header, header and payload). A packet sent without a checksum
 * (0) keeps none.
 */
export function fixUdpChecksum(pkt: Buffer, p: ParsedPacket): void {
  if (p.flow.proto !== IPPROTO_UDP) return;
  const csumOff = p.l4 + 6;
  if (pkt.readUInt16BE(csumOff) === 0) return;
  const udpLen = pkt.readUInt16BE(p.l4 + 4);
  pkt.writeUInt16BE(0, csumOff);
  const pseudo = Buffer.alloc(12);
  pkt.copy(pseudo, 0, 12, 20);
  pseudo[9] = IPPROTO_UDP;
  pseudo.writeUInt16BE(udpLen, 10);
  const sum = ~onesSum(pkt.subarray(p.l4, p.l4 + udpLen), onesSum(pseudo)) & 0xffff;
  // 0 means "no checksum" in UDP over IPv4: a computed 0 is sent as 0xffff
  pkt.writeUInt16BE(sum === 0 ? 0xffff : sum, csumOff);
}
