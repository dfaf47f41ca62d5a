/**
 * A cheap exact barrier for XDP program runs on this host: once it returns,
 * every XDP program run (switch, agent, VNF) that had begun on any CPU before
 * the call has finished, and the frames it redirected have been flushed to
 * their devices' queues (the flush ends the same NAPI poll). XDP runs in
 * softirq with bottom halves disabled, which is never preempted; the calling
 * thread running on a CPU in process context proves that CPU left any such
 * section. The price is a migration per CPU (tens of µs), not an RCU grace
 * period (the ~11 ms a map-in-map update waits for).
 */
import { bpfNative } from './native.js';
import { native } from './errors.js';

/** Returns the number of CPUs passed; throws BpfError when a CPU cannot be entered (e.g. a cpuset excludes it). */
export function cpuBarrier(): number {
  return native(() => bpfNative.cpuBarrier());
}

/** An interface of the thread's namespace: up (IFF_UP), running (IFF_RUNNING), carrier (ETHTOOL_GLINK: for a veth, its peer up; IFF_RUNNING follows it only later): two ioctls. */
export function interfaceFlags(ifname: string): { up: boolean; running: boolean; carrier: boolean } {
  return native(() => bpfNative.ifFlags(ifname));
}
