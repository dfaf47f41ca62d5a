#!/usr/bin/python3
"""Builds a sharpctl lab in Mininet: plain hosts, VNF hosts and BMv2
(simple_switch_grpc) switch nodes, from the plan sharpctl writes as JSON.

    /usr/bin/python3 sharp_topo.py PLAN.json          # run by sharpctl lab up --target bmv2
    /usr/bin/python3 sharp_topo.py PLAN.json --cli    # the same lab with Mininet's CLI

Every node (switches included) gets its own network namespace, which is
also given the plan's name with `ip netns attach`, so sharpctl reaches it
like the namespaces of its XDP lab (and removes leftovers by prefix). This
kernel has no Open vSwitch module: no OVS switch and no controller are used.

Protocol with sharpctl: one line `READY {json}` on stdout once every switch
answers on its gRPC socket, or `ERROR message` before exiting non-zero. The
lab stops (BMv2 processes, nodes, links, namespace names) when stdin closes,
on SIGTERM or on SIGINT.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import Host, Switch
from mininet.util import ensureRoot


def disable_ipv6(node):
    # no IPv6 autoconfiguration chatter: every frame on the lab's links is ours
    node.cmd('sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1')


class SharpHost(Host):
    """A host or VNF instance: a namespace with the plan's interfaces."""

    def __init__(self, name, **params):
        params.pop('inNamespace', None)
        Host.__init__(self, name, inNamespace=True, **params)
        disable_ipv6(self)


class Bmv2Switch(Switch):
    """simple_switch_grpc in its own namespace, P4Runtime on a Unix socket.

    A Unix socket (not TCP) because the switch's loopback is in its own
    namespace; it also lets parallel labs run without port clashes."""

    def __init__(self, name, bmv2=None, **params):
        params.pop('inNamespace', None)  # Mininet passes its own (False)
        Switch.__init__(self, name, inNamespace=True, **params)
        disable_ipv6(self)
        self.bmv2 = bmv2
        self.proc = None

    def start(self, controllers):
        b = self.bmv2
        self.cmd('ip link set lo up')  # BMv2's Thrift server listens there
        args = [b['binary'], '--device-id', str(b['deviceId'])]
        for port in b['ports']:
            # No offloads: with any of TSO/GSO/GRO on, libpcap (BMv2's port
            # I/O) sizes its receive ring for 64 KiB frames - 32 slots in its
            # 2 MiB - and drops bursts. (sharpctl attaches an XDP pass
            # program so XDP can still redirect frames into these veths.)
            for feature in ('tx', 'sg', 'tso', 'gso', 'gro'):
                self.cmd('ethtool -K %s %s off' % (port['ifname'], feature))
            args += ['-i', '%d@%s' % (port['port'], port['ifname'])]
        args += ['--thrift-port', '9090',
                 '--notifications-addr', 'ipc://%s' % b['notifications']]
        args += ['--log-file', b['log']] if b.get('log') else []
        # the pipeline comes over P4Runtime; target options follow '--'
        args += ['--no-p4', '--', '--grpc-server-addr', b['grpc'], '--cpu-port', str(b['cpuPort'])]
        log = open(b['stdout'], 'wb')
        self.proc = self.popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def stop(self, deleteIntfs=True):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        Switch.stop(self, deleteIntfs)

    def connected(self):
        return self.proc is not None and self.proc.poll() is None


def set_queue_depth(node, depth):
    """BMv2 queues 64 frames per egress port by default: a hold ring's release
    (thousands of frames at once) would overflow it. P4Runtime has no call for
    this; BMv2's own CLI sets it over Thrift. Returns a warning or None."""
    cli = shutil.which('simple_switch_CLI')
    if cli is None:
        return 'simple_switch_CLI not found: %s keeps BMv2\'s 64-frame egress queues' % node.name
    # its shebang may name an interpreter without BMv2's Thrift bindings
    p = node.popen([sys.executable, cli, '--thrift-port', '9090'], stdin=subprocess.PIPE,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = p.communicate(('set_queue_depth %d\n' % depth).encode(), timeout=30)
    if p.returncode != 0 or b'Error' in out or b'Could not connect' in out:
        return 'set_queue_depth on %s failed: %s' % (node.name, out.decode(errors='replace').strip()[-300:])
    return None


def wait_for_socket(path, proc, timeout_s):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            return 'exited with status %d' % proc.returncode
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return None
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.05)
    return 'did not open %s within %d s' % (path, timeout_s)


def link_mac(end):
    """The plan's MAC, or a stable locally administered one (Mininet sets
    both ends' addresses or neither)."""
    if end.get('mac'):
        return end['mac']
    h = hashlib.sha256(('%s/%s' % (end['node'], end['ifname'])).encode()).digest()
    return '02:%02x:%02x:%02x:%02x:%02x' % tuple(h[:5])


def build(plan):
    # Mininet.init() would raise system-wide limits and sysctls (ARP cache,
    # somaxconn, ...) of the root namespace; a lab of a few nodes needs none.
    ensureRoot()
    Mininet.inited = True
    net = Mininet(topo=None, build=False, controller=None, autoSetMacs=False, autoStaticArp=False)
    nodes = {}
    for n in plan['nodes']:
        if n['kind'] == 'switch':
            nodes[n['name']] = net.addSwitch(n['name'], cls=Bmv2Switch, bmv2=plan['bmv2'][n['name']])
        else:
            nodes[n['name']] = net.addHost(n['name'], cls=SharpHost, ip=None)
    for link in plan['links']:
        a, b = link['ends']
        net.addLink(nodes[a['node']], nodes[b['node']], intfName1=a['ifname'], intfName2=b['ifname'],
                    addr1=link_mac(a), addr2=link_mac(b),
                    params1={'ip': a['address']} if a.get('address') else {},
                    params2={'ip': b['address']} if b.get('address') else {})
    return net, nodes


def attach_names(plan, nodes):
    for n in plan['nodes']:
        subprocess.run(['ip', 'netns', 'attach', n['netns'], str(nodes[n['name']].pid)], check=True)


def detach_names(plan):
    for n in plan['nodes']:
        subprocess.run(['ip', 'netns', 'delete', n['netns']], stderr=subprocess.DEVNULL)


def main():
    plan = json.load(open(sys.argv[1]))
    with_cli = '--cli' in sys.argv[2:]
    setLogLevel('warning')
    net = None
    code = 0
    stop = {'now': False}

    def on_signal(signum, frame):
        stop['now'] = True
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_signal)
    try:
        net, nodes = build(plan)
        attach_names(plan, nodes)
        net.build()
        for link in plan['links']:
            for end in link['ends']:
                nodes[end['node']].cmd('ip link set dev %s mtu %d' % (end['ifname'], link['mtu']))
        net.start()
        for name, b in plan['bmv2'].items():
            why = wait_for_socket(b['grpc'][len('unix:'):], nodes[name].proc, 30)
            if why is not None:
                raise RuntimeError('BMv2 of %s %s (log: %s)' % (name, why, b['stdout']))
        warnings = [w for w in (set_queue_depth(nodes[name], b['queueDepth']) for name, b in plan['bmv2'].items()) if w]
        ready = {'pid': os.getpid(), 'warnings': warnings, 'nodes': {n: nodes[n].pid for n in nodes},
                 'switches': {n: nodes[n].proc.pid for n in plan['bmv2']}}
        print('READY ' + json.dumps(ready), flush=True)
        if with_cli:
            from mininet.cli import CLI
            CLI(net)
        else:
            while not stop['now'] and sys.stdin.read(4096):
                pass
    except KeyboardInterrupt:
        pass
    except Exception as e:  # reported to sharpctl, then cleaned up
        print('ERROR %s' % e, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if net is not None:
            try:
                net.stop()
            except Exception as e:
                print('ERROR stopping the network: %s' % e, file=sys.stderr, flush=True)
        detach_names(plan)
    sys.exit(code)


if __name__ == '__main__':
    main()
