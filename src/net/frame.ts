/**
 * Building and parsing Ethernet/IPv4/UDP frames (checksums complete), for
 * tests, traffic generation and the sink.
 */

export function macBytes(mac: string): Buffer {
  const b = Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
  if (b.length !== 6) throw new RangeError(`not a MAC address: ${mac}`);
  return b;
}

export function macString(b: Buffer, offset = 0): string {
  return [...b.subarray(offset, offset + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export function ipv4Bytes(addr: string): Buffer {
  const parts = addr.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new RangeError(`not an IPv4 address: ${addr}`);
  return Buffer.from(parts);
}

export function ipv4Number(addr: string): number {
  // dotted decimal parsed in place: flow keys are converted by the 100,000 in a state move
  let n = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < addr.length; i++) {
    const c = addr.charCodeAt(i);
    if (c >= 48 && c <= 57 && digits < 3) {
      part = part * 10 + (c - 48);
      digits++;
    } else if (c === 46 && digits > 0 && part <= 255 && dots < 3) {
      n = n * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else return ipv4Bytes(addr).readUInt32BE(0); // anything else: the general parse accepts it or says why not
  }
  if (dots !== 3 || digits === 0 || part > 255) return ipv4Bytes(addr).readUInt32BE(0);
  return n * 256 + part;
}

export function ipv4String(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** RFC 1071 one's-complement sum, folded, not complemented. */
export function onesSum(b: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2 === 1) sum += b[b.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

export function checksum(b: Buffer, initial = 0): number {
  return ~onesSum(b, initial) & 0xffff;
}

export interface EthernetFields {
  dst: string;
  src: string;
  etherType: number;
  payload: Buffer;
}

export function ethernet(f: EthernetFields): Buffer {
  const h = Buffer.alloc(14);
  macBytes(f.dst).copy(h, 0);
  macBytes(f.src).copy(h, 6);
  h.writeUInt16BE(f.etherType, 12);
  return Buffer.concat([h, f.payload]);
}

export interface UdpFrameFields {
  srcMac: string;
  dstMac: string;
  srcIp: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
  ttl?: number;
  /** false: UDP checksum 0 (allowed for IPv4) */
  udpChecksum?: boolean;
  protocol?: number;
}

export const ETH_P_IPV4 = 0x0800;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export function ipv4Header(src: string, dst: string, protocol: number, payloadLength: number, ttl = 64): Buffer {
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + payloadLength, 2);
  ip.writeUInt16BE(0x4000, 6); // DF
  ip[8] = ttl;
  ip[9] = protocol;
  ipv4Bytes(src).copy(ip, 12);
  ipv4Bytes(dst).copy(ip, 16);
  ip.writeUInt16BE(checksum(ip), 10);
  return ip;
}

/** A complete Ethernet/IPv4/UDP frame with valid checksums. */
export function udpFrame(f: UdpFrameFields): Buffer {
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(f.srcPort, 0);
  udp.writeUInt16BE(f.dstPort, 2);
  udp.writeUInt16BE(8 + f.payload.length, 4);
  const seg = Buffer.concat([udp, f.payload]);
  if (f.udpChecksum !== false) {
    const pseudo = Buffer.alloc(12);
    ipv4Bytes(f.srcIp).copy(pseudo, 0);
    ipv4Bytes(f.dstIp).copy(pseudo, 4);
    pseudo[9] = IPPROTO_UDP;
    pseudo.writeUInt16BE(seg.length, 10);
    const c = checksum(seg, onesSum(pseudo)) || 0xffff;
    seg.writeUInt16BE(c, 6);
  }
  const ip = ipv4Header(f.srcIp, f.dstIp, f.protocol ?? IPPROTO_UDP, seg.length, f.ttl);
  return ethernet({ dst: f.dstMac, src: f.srcMac, etherType: ETH_P_IPV4, payload: Buffer.concat([ip, seg]) });
}

/** Verifies the IPv4 header checksum and, when non-zero, the UDP checksum. */
export function checksumsValid(frame: Buffer, l3Offset = 14): boolean {
  const ihl = (frame[l3Offset]! & 0x0f) * 4;
  const ip = frame.subarray(l3Offset, l3Offset + ihl);
  if (onesSum(ip) !== 0xffff) return false;
  if (ip[9] !== IPPROTO_UDP) return true;
  const total = ip.readUInt16BE(2);
  const seg = frame.subarray(l3Offset + ihl, l3Offset + total);
  if (seg.readUInt16BE(6) === 0) return true;
  const pseudo = Buffer.alloc(12);
  ip.copy(pseudo, 0, 12, 20);
  pseudo[9] = IPPROTO_UDP;
  pseudo.writeUInt16BE(seg.length, 10);
  return onesSum(seg, onesSum(pseudo)) === 0xffff;
}
