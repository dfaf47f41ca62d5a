/**
 * The native addon's surface, typed. Nothing here decides anything: it is
 * libbpf and a few system calls, as they are (see src/native/bpf_binding.cc).
 */
import { createRequire } from 'node:module';
import { addonPath } from './addon-path.js';

export interface NativeMapSpec {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  internal: boolean;
  pinPath?: string;
  fd?: number;
}

export interface NativeProgramSpec {
  name: string;
  section: string;
  type: number;
  autoload: boolean;
  fd?: number;
}

export interface NativeBpfObject {
  maps(): NativeMapSpec[];
  programs(): NativeProgramSpec[];
  setMaxEntries(map: string, n: number): void;
  setPinPath(map: string, path: string | null): void;
  initialValue(map: string): Buffer | null;
  setInitialValue(map: string, value: Buffer): void;
  setAutoload(program: string, on: boolean): void;
  /** Returns libbpf's output of the load. */
  load(): string;
  mapFd(name: string): number;
  programFd(name: string): number;
  close(): void;
}

export interface NativeTestRunOptions {
  dataIn?: Buffer;
  dataOutSize?: number;
  ctxIn?: Buffer;
  ctxOutSize?: number;
  repeat?: number;
  flags?: number;
  batchSize?: number;
  cpu?: number;
  /** path of a network namespace to run in (the thread enters it) */
  netns?: string;
}

export interface NativeTestRunResult {
  retval: number;
  duration: number;
  dataOut?: Buffer;
  ctxOut?: Buffer;
}

export interface NativePacing {
  framesPerSecond: number;
  /** frames per test run */
  chunk: number;
  /** stop after this many frames (0: run until stop()) */
  maxFrames: number;
  /** behind the schedule by more than this, the schedule moves on instead of a catch-up burst */
  maxLagNs: number;
}

export interface NativePacedResult {
  frames: number;
  runs: number;
  elapsedNs: number;
  /** time the schedule moved on by (the thread was kept off the CPU for longer than maxLagNs) */
  slippedNs: number;
}

export interface NativePacedRun {
  done: Promise<NativePacedResult>;
  stop(): void;
  /** frames handed to the program so far */
  sent(): number;
}

export interface NativeRingBuffer {
  consume(): number;
  close(): void;
  ref(): void;
  unref(): void;
}

export interface NativeBatch {
  keys: Buffer;
  values: Buffer;
  count: number;
  token: Buffer;
  done: boolean;
}

export interface NativeBinding {
  BpfObject: new (path: string) => NativeBpfObject;
  RingBuffer: new (mapFd: number, onSamples: (samples: Buffer[]) => void) => NativeRingBuffer;
  mapLookup(fd: number, key: Buffer, valueSize: number, flags?: number): Buffer | null;
  mapLookupAndDelete(fd: number, key: Buffer, valueSize: number): Buffer | null;
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags?: number): void;
  mapDelete(fd: number, key: Buffer): boolean;
  mapNextKey(fd: number, key: Buffer | null, keySize: number): Buffer | null;
  mapLookupBatch(fd: number, token: Buffer | null, keySize: number, valueSize: number, count: number, tokenSize: number): NativeBatch;
  mapUpdateBatch(fd: number, keys: Buffer, values: Buffer, count: number, flags?: number): number;
  mapDeleteBatch(fd: number, keys: Buffer, count: number): number;
  mapInfo(fd: number): { id: number; name: string; type: number; keySize: number; valueSize: number; maxEntries: number; flags: number };
  progInfo(fd: number): { id: number; name: string; type: number };
  linkInfo(fd: number): { id: number; type: number; progId: number; ifindex?: number };
  numPossibleCpus(): number;
  /** runs the thread once on every online CPU (see CpuBarrier); returns how many */
  cpuBarrier(): number;
  objPin(fd: number, path: string): void;
  objGet(path: string): number;
  closeFd(fd: number): void;
  /** flock(2): true when taken, false when held elsewhere (nonblock) */
  flock(fd: number, op: 'ex' | 'sh' | 'un', nonblock?: boolean): boolean;
  setCloexec(fd: number, on: boolean): void;
  /** pidfd_open(2) */
  pidfdOpen(pid: number): number;
  /** pidfd_getfd(2): this process's copy of fd `fd` of the process behind `pidfd` */
  pidfdGetfd(pidfd: number, fd: number): number;
  /** an AF_PACKET socket's PACKET_STATISTICS (reset by the kernel on each read) and bound ifindex; null for another kind of fd */
  packetSocketStats(fd: number): { ifindex: number; packets: number; drops: number } | null;
  progGetFdById(id: number): number;
  netnsEnter(path: string): number;
  netnsRestore(saved: number): void;
  ifNameToIndex(name: string): number;
  /** `count` framed netlink requests (seq = index + 1; each ends with its ack, or NLMSG_DONE for a dump) on a fresh socket of `protocol`, on a worker thread inside `netnsPath` ('' = the process's namespace), `window` per send: one errno per request (0: done), and every other message received */
  netlinkTransactAsync(netnsPath: string, protocol: number, messages: Buffer, count: number, window: number): Promise<{ errnos: Int32Array; replies: Buffer }>;
  /** SIOCGIFFLAGS in the thread's namespace */
  ifFlags(name: string): { up: boolean; running: boolean; carrier: boolean };
  /** opens /dev/net/tun attached to TUN interface `name` (TUNSETIFF, IFF_TUN | IFF_NO_PI) of the thread's namespace; blocking fd */
  tunOpen(name: string): { fd: number; name: string };
  xdpLinkCreate(progFd: number, ifindex: number, flags: number): number;
  rawTracepointOpen(progFd: number, tracepoint: string): number;
  linkUpdate(linkFd: number, progFd: number, oldProgFd?: number): void;
  linkDetach(linkFd: number): void;
  xdpAttach(ifindex: number, progFd: number, flags: number, oldProgFd?: number): void;
  xdpDetach(ifindex: number, flags: number): void;
  xdpQuery(ifindex: number): { progId: number; driverProgId: number; genericProgId: number; hardwareProgId: number; attachMode: number };
  tcAttach(ifindex: number, point: 'ingress' | 'egress', progFd: number, handle: number, priority: number, replace: boolean): { handle: number; priority: number; progId: number };
  tcDetach(ifindex: number, point: 'ingress' | 'egress', handle: number, priority: number): void;
  tcQuery(ifindex: number, point: 'ingress' | 'egress', handle: number, priority: number): { progId: number } | null;
  tcHookDestroy(ifindex: number): void;
  progTestRun(progFd: number, opts: NativeTestRunOptions): NativeTestRunResult;
  progTestRunAsync(progFd: number, opts: NativeTestRunOptions): Promise<NativeTestRunResult>;
  /** live-frames runs paced on a worker thread (clock_nanosleep), until maxFrames or stop() */
  progTestRunPaced(progFd: number, opts: NativeTestRunOptions, pacing: NativePacing): NativePacedRun;
  setDebug(on: boolean): void;
  libbpfVersion(): string;
}

export const bpfNative: NativeBinding = createRequire(import.meta.url)(addonPath()) as NativeBinding;

if (process.env['SHARP_DEBUG']?.split(',').includes('libbpf')) bpfNative.setDebug(true);
