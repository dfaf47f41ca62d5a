/** The committed compile of p4/sharp.p4 (make p4 rebuilds it when p4c is installed). */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** this file is dist/src/dataplane/bmv2/artifacts.js */
const p4Build = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../p4/build');

export const P4_ARTIFACTS = {
  /** P4Info in the protobuf JSON mapping */
  p4info: path.join(p4Build, 'sharp.p4info.json'),
  /** BMv2 JSON: the device config of SetForwardingPipelineConfig */
  bmv2Json: path.join(p4Build, 'sharp.json'),
} as const;
