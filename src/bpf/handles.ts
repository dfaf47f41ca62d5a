/**
 * Every kernel handle (object, link, ring buffer) registers here and is
 * released when the process exits, also when the caller forgot close().
 */
export interface Closeable {
  close(): void;
}

const open = new Set<Closeable>();
let hooked = false;

export function track(h: Closeable): void {
  open.add(h);
  if (!hooked) {
    hooked = true;
    process.once('exit', closeAll);
  }
}

export function untrack(h: Closeable): void {
  open.delete(h);
}

/** Closes every tracked handle, newest first (links before the programs they hold). */
export function closeAll(): void {
  for (const h of [...open].reverse()) {
    try {
      h.close();
    } catch {
      // exit path: nothing useful to do with a failure here
    }
  }
  open.clear();
}

export function openHandleCount(): number {
  return open.size;
}
