export * from './bpf/index.js';
export * as frame from './net/frame.js';
export * as iproute from './net/iproute.js';
