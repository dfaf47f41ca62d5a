/**
 * The `userspace` VNF kind (src/node/vnf-kinds.ts): the TypeScript VNF on
 * E-State (UserspaceVnf) on the packet path, in a process per instance fed
 * by a TUN device of the instance's stack. See README.md, "The TypeScript
 * VNF on the packet path".
 */
export { UserspaceVnfFleet, UserspaceVnfProcess, UserspaceVnfError, configureTunRouting, TUN_NAME, TUN_TABLE, BARRIER_ADDRESS, type UserspaceVnfInstanceSpec } from './fleet.js';
export { UserspaceVnfProcessStateManager } from './state-manager.js';
export { parseIpv4, fixUdpChecksum, type ParsedPacket } from './packet.js';
export type { VnfProcessStats } from './protocol.js';
