/** Pluggable VNF state management: E-State, Redis, direct copy, the VNF's own map. */
export * from './types.js';
export * from './flow-key.js';
export * from './mover.js';
export * from './factory.js';
export { DataPlaneStateManager } from './dataplane-manager.js';
export { EStateNode, PeerUnavailableError, type EStateNodeOptions, type GlobalOptions, type GlobalResult, type RequestOptions, type EStateNodeStats } from './estate/node.js';
export { ESTATE_PROTO, type StateItem, type StateValue, type Member } from './estate/proto.js';
export { reducers, latestItem, sumItems, avgItems, ReduceError, type Reducer, type ReduceName } from './estate/reduce.js';
export { EStateManager, type EStateManagerOptions } from './estate-manager.js';
export { RedisStateManager, type RedisStateManagerOptions } from './redis-manager.js';
export { startRedisServer, findRedisServer, type RedisServer, type RedisServerOptions } from './redis-server.js';
export { startRedisCluster, findRedisCli, type RedisCluster, type RedisClusterOptions, type RedisClusterNode, type RedisClusterNodeState } from './redis-cluster-server.js';
export { handoverTag, type RedisClient } from './redis-stage.js';
export { CopyStateManager, CopyEndpoint, type CopyStateManagerOptions } from './copy-manager.js';
export { VnfMapStateManager } from './vnf-map-manager.js';
export { UserspaceVnf, UserspaceVnfStateManager, type UserspaceVnfOptions, type ProcessResult } from './userspace-vnf.js';
