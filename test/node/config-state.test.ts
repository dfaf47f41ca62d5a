// A node config's state sections: peers (which nodes it moves VNF state
// with, and the CA their certificates must be signed by) and stateStore (the
// deployment's Redis). Every problem names its path.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadNodeConfig, validateNodeConfig } from '../../src/node/config.js';

const vnfNode = { name: 'vnfa', listen: { unix: '/run/sharpt/vnfa.sock' }, instances: [{ name: 'vnf1', kind: 'counter', ifaces: ['eth0', 'eth1'] }] };
const tls = { ca: '/c/ca.crt', cert: '/c/node-vnfa.crt', key: '/c/node-vnfa.key' };

const problems = (value: unknown): string => {
  try {
    validateNodeConfig(value);
  } catch (e) {
    return (e as Error).message;
  }
  return '';
};

t.test('peers: the nodes this one moves state with, and their CA when it speaks TLS', async (t) => {
  const ok = validateNodeConfig({ ...vnfNode, listen: { ...vnfNode.listen, tcp: '10.8.0.1:7441' }, tls, peers: { ca: '/c/ca.crt', allow: ['vnfb', 'vnfc'] } });
  t.same(ok.peers, { ca: '/c/ca.crt', allow: ['vnfb', 'vnfc'] });
  t.same(validateNodeConfig({ ...vnfNode, peers: { allow: ['vnfb'] } }).peers, { allow: ['vnfb'] }, 'without tls: Unix-socket peers only, no CA');
  t.match(problems({ ...vnfNode, tls, peers: { allow: ['vnfb'] } }), /peers\.ca: name the CA the peers' certificates must be signed by/, 'with tls the CA is explicit');
  t.match(problems({ ...vnfNode, peers: { ca: '/c/ca.crt', allow: ['vnfb'] } }), /peers\.ca: without tls this node has no certificate to present/);
  t.match(problems({ ...vnfNode, peers: { allow: ['vnfa'] } }), /peers\.allow: 'vnfa' is this node itself/);
  t.match(problems({ ...vnfNode, peers: { allow: ['bad name'] } }), /peers\/allow\/0|peers\.allow\.0/, 'a peer name outside the node-name pattern, by its path');
  t.match(problems({ ...vnfNode, peers: { allow: ['vnfb', 'vnfb'] } }), /peers\.allow|peers\/allow/, 'twice the same peer');
  t.match(problems({ ...vnfNode, peers: {} }), /peers.*allow/, 'allow is required');
  t.match(problems({ name: 's1', listen: { unix: '/run/sharpt/s1.sock' }, switches: [{ name: 's1', ports: [{ name: 'p', ifname: 'eth0', role: 'host' }] }], peers: { allow: ['vnfb'] } }), /peers: this node carries no VNF instance/);
});

t.test('stateStore: the Redis the node stages state in; credentials never in the URL', async (t) => {
  const c = validateNodeConfig({ ...vnfNode, stateStore: { redis: { url: 'redis://10.8.0.9:6379/2', username: 'sharp', passwordFile: '/etc/sharpctl/redis.pass' } } });
  t.same(c.stateStore, { redis: { url: 'redis://10.8.0.9:6379/2', username: 'sharp', passwordFile: '/etc/sharpctl/redis.pass', keyPrefix: 'sharp:', timeoutMs: 2000 } }, 'defaults: key prefix sharp:, 2 s per command');
  t.ok(validateNodeConfig({ ...vnfNode, stateStore: { redis: { url: 'rediss://store.example:6380' } } }), 'rediss:// (TLS) is accepted');
  t.match(problems({ ...vnfNode, stateStore: { redis: { url: 'redis://:secret@10.8.0.9:6379' } } }), /stateStore\.redis\.url|stateStore\/redis\/url/, 'a password in the URL is refused: it goes in passwordFile');
  t.match(problems({ ...vnfNode, stateStore: { redis: { url: 'http://10.8.0.9:6379' } } }), /stateStore.redis.url|stateStore\/redis\/url/);
  t.match(problems({ ...vnfNode, stateStore: { redis: { url: 'redis://h:1', timeoutMs: 5 } } }), /timeoutMs/);
  t.match(problems({ ...vnfNode, stateStore: { redis: { url: 'redis://h:1', keyPrefix: 'a b' } } }), /keyPrefix/);
  t.match(problems({ ...vnfNode, stateStore: {} }), /stateStore.*redis/);
});

t.test('stateStore.estate: the E-State group the node is a member of; over TCP only with mutual TLS and the members\' CA', async (t) => {
  const estate = { group: 'lab1', listen: '10.8.0.3:7451', members: [{ node: 'vnfb', address: '10.8.0.4:7451' }] };
  const c = validateNodeConfig({ ...vnfNode, tls, peers: { ca: '/c/ca.crt', allow: ['vnfb'] }, stateStore: { estate } });
  t.same(c.stateStore, { estate: { ...estate, timeoutMs: 1000 } }, 'default: 1 s per request to a member');
  t.ok(validateNodeConfig({ ...vnfNode, stateStore: { estate: { group: 'g', listen: 'unix:/run/sharpt/vnfa.estate.sock', members: [{ node: 'vnfb', address: 'unix:/run/sharpt/vnfb.estate.sock' }] } } }), 'Unix sockets need no TLS');
  t.ok(validateNodeConfig({ ...vnfNode, stateStore: { redis: { url: 'redis://h:1' }, estate: { group: 'g', listen: 'unix:/run/sharpt/a.sock', members: [] } } }), 'both stores at once: each handover names its store');
  t.match(problems({ ...vnfNode, stateStore: { estate } }), /stateStore\.estate\.listen: a member on TCP serves mutual TLS only/);
  t.match(problems({ ...vnfNode, tls, peers: { ca: '/c/ca.crt', allow: ['vnfb'] }, stateStore: { estate: { ...estate, members: [{ node: 'vnfa', address: '10.8.0.3:7451' }] } } }), /stateStore\.estate\.members\.0\.node: 'vnfa' is this node itself/);
  t.match(problems({ ...vnfNode, tls, peers: { ca: '/c/ca.crt', allow: ['vnfb'] }, stateStore: { estate: { ...estate, members: [estate.members[0], estate.members[0]] } } }), /stateStore\.estate\.members\.1\.node: 'vnfb' twice/);
  t.match(problems({ ...vnfNode, stateStore: { estate: { ...estate, listen: 'nowhere' } } }), /stateStore[./]estate[./]listen/, 'neither host:port nor unix:/path, by its path');
  t.match(problems({ ...vnfNode, stateStore: { estate: { group: 'g', listen: 'unix:/a.sock' } } }), /members/, 'members is required');
});

t.test('stateStore: a Redis Cluster, by some of its nodes; one server or a cluster, never both', async (t) => {
  const c = validateNodeConfig({ ...vnfNode, stateStore: { redis: { cluster: ['10.8.0.9:7000', '10.8.0.10:7000', '[fd00::9]:7000'], passwordFile: '/etc/sharpctl/redis.pass', failoverMs: 8000 } } });
  t.same(c.stateStore, { redis: { cluster: ['10.8.0.9:7000', '10.8.0.10:7000', '[fd00::9]:7000'], passwordFile: '/etc/sharpctl/redis.pass', failoverMs: 8000, keyPrefix: 'sharp:', timeoutMs: 2000 } });
  t.match(problems({ ...vnfNode, stateStore: { redis: { url: 'redis://10.8.0.9:6379', cluster: ['10.8.0.9:7000'] } } }), /stateStore\.redis\.cluster: give url \(one server\) or cluster \(a Redis Cluster\), not both/);
  t.match(problems({ ...vnfNode, stateStore: { redis: { keyPrefix: 'x:' } } }), /stateStore\.redis: give url \(one server, redis:\/\/host:port\) or cluster/);
  t.match(problems({ ...vnfNode, stateStore: { redis: { cluster: ['10.8.0.9:7000', 'nohostport'] } } }), /stateStore\.redis\.cluster\.1: must match pattern/, 'a node that is not host:port, by its index');
  t.match(problems({ ...vnfNode, stateStore: { redis: { cluster: ['10.8.0.9:99999'] } } }), /stateStore\.redis\.cluster\.0: port 99999 is not 1-65535/);
  t.match(problems({ ...vnfNode, stateStore: { redis: { cluster: [] } } }), /stateStore\.redis\.cluster: must NOT have fewer than 1 items/);
  t.match(problems({ ...vnfNode, stateStore: { redis: { cluster: ['a:1', 'a:1'] } } }), /stateStore\.redis\.cluster: must NOT have duplicate items/);
  t.match(problems({ ...vnfNode, stateStore: { redis: { url: 'redis://10.8.0.9:6379', failoverMs: 100 } } }), /stateStore\.redis\.failoverMs: only for a cluster/);
});

t.test('relative peers.ca and stateStore.redis.passwordFile are relative to the config file', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-nodecfg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'vnfa.json');
  const cfg: Record<string, unknown> = { ...vnfNode, tls: { ca: 'certs/ca.crt', cert: 'certs/node-vnfa.crt', key: 'certs/node-vnfa.key' }, peers: { ca: 'certs/peers-ca.crt', allow: ['vnfb'] }, stateStore: { redis: { url: 'redis://10.8.0.9:6379', passwordFile: 'redis.pass' } } };
  writeFileSync(file, JSON.stringify(cfg));
  const c = loadNodeConfig(file);
  t.equal(c.peers?.ca, path.join(dir, 'certs/peers-ca.crt'));
  t.equal(c.stateStore?.redis?.passwordFile, path.join(dir, 'redis.pass'));
});

t.test('table sizes: a switch names its rule tables (maxRules), an instance its flow_state map (vnfFlows); out of range is refused by field', async (t) => {
  const sw = { name: 's1', listen: { unix: '/run/sharpt/s1.sock' }, switches: [{ name: 's1', maxRules: 16384, ports: [{ name: 'p', ifname: 'eth0', role: 'host' }] }] };
  t.equal(validateNodeConfig(sw).switches[0]!.maxRules, 16384);
  t.equal(validateNodeConfig({ ...vnfNode, instances: [{ ...vnfNode.instances[0], vnfFlows: 200_000 }] }).instances[0]!.vnfFlows, 200_000);
  t.equal(validateNodeConfig(vnfNode).instances[0]!.vnfFlows, undefined, 'absent: the object default');
  t.match(problems({ ...sw, switches: [{ ...sw.switches[0], maxRules: 1 }] }), /switches[./]0[./]maxRules/);
  t.match(problems({ ...vnfNode, instances: [{ ...vnfNode.instances[0], vnfFlows: 1 << 23 }] }), /instances[./]0[./]vnfFlows/);
});

t.test('directRelay: the interfaces of a switch that cannot relay, facing this node\'s instances and their targets', async (t) => {
  const relay = [{ netns: 'sharp-lab-s1', ports: [{ ifname: 's1-eth2', instance: 'vnf1', side: 0 }, { ifname: 's1-eth3', instance: 'vnf2', side: 0 }] }];
  t.same(validateNodeConfig({ ...vnfNode, directRelay: relay }).directRelay, relay, 'vnf2 may be another node\'s instance');
  t.match(problems({ ...vnfNode, directRelay: [{ ports: [{ ifname: 'x', instance: 'vnf2', side: 0 }] }] }), /directRelay: no port faces an instance of this node \(vnf1\)/);
  t.match(problems({ ...vnfNode, directRelay: [{ ports: [{ ifname: 'x', instance: 'vnf1', side: 2 }] }] }), /directRelay\.0\.ports\.0\.side: must be <= 1/);
  t.match(problems({ ...vnfNode, directRelay: [{ ports: [{ ifname: 'x', instance: 'vnf1' }] }] }), /directRelay\.0\.ports\.0: missing field 'side'/);
  t.match(problems({ ...vnfNode, directRelay: [] }), /directRelay: must NOT have fewer than 1 items/);
  t.match(
    problems({ name: 's1', listen: { unix: '/run/sharpt/s1.sock' }, switches: [{ name: 's1', ports: [{ name: 'p', ifname: 'eth0', role: 'host' }] }], directRelay: relay }),
    /directRelay: this node carries no VNF instance/,
  );
});
