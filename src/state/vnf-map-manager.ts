/**
 * The VNF's own state access, as a state manager: the controller exports
 * the example XDP VNF's map entries at the old instance and imports them at
 * the new one (what VnfMapStateMover does), with no store in between.
 */
import type { FlowStateEntry } from '../dataplane/types.js';
import type { HandoverContext } from '../handover/state-mover.js';
import { DataPlaneStateManager } from './dataplane-manager.js';
import { flowKeyString } from './flow-key.js';
import { StateError, type Departure } from './types.js';

export class VnfMapStateManager extends DataPlaneStateManager {
  readonly kind = 'vnf-map';
  readonly #staged = new Map<number, FlowStateEntry[]>();

  async start(): Promise<void> {}

  protected async stage(ctx: HandoverContext, entries: readonly FlowStateEntry[]): Promise<string[]> {
    this.#staged.set(ctx.id, [...entries]);
    return entries.map((e) => flowKeyString(e.flow));
  }

  protected async obtain(ctx: HandoverContext): Promise<FlowStateEntry[]> {
    const e = this.#staged.get(ctx.id);
    if (e === undefined) throw new StateError(`vnf-map: nothing was exported for handover ${ctx.id}`);
    return e;
  }

  protected async discard(_ctx: HandoverContext, departure: Departure): Promise<void> {
    this.#staged.delete(departure.handoverId);
  }

  async close(): Promise<void> {
    this.#staged.clear();
  }
}
