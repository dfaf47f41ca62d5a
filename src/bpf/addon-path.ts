/**
 * Where the native addon is, without loading it: a module that needs the
 * addon only sometimes (the lab lock in run-dir.ts) loads it when it does,
 * so that commands such as `sharpctl status` never pay for it.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The addon is built in place by node-gyp (make build) under src/native/build. */
export function addonPath(): string {
  const candidates = [
    path.resolve(here, '../../../src/native/build/Release/sharp_bpf.node'), // from dist/src/bpf
    path.resolve(here, '../native/build/Release/sharp_bpf.node'), // from src/bpf
  ];
  const found = candidates.find((c) => existsSync(c));
  if (found === undefined) throw new Error(`native addon not built (looked in ${candidates.join(', ')}); run 'make build'`);
  return found;
}
