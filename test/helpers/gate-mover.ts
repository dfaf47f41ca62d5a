/** A state mover that waits in its move until opened: lets a test act mid-handover (send the frames B holds, kill the controller). */
import { VnfMapStateMover, type HandoverContext, type StateMover } from '../../src/handover/state-mover.js';

export class GateMover implements StateMover {
  readonly name = 'gate';
  readonly inner = new VnfMapStateMover();
  open!: () => void;
  readonly entered: Promise<void>;
  #entered!: () => void;
  constructor() {
    this.entered = new Promise((r) => (this.#entered = r));
  }
  async move(ctx: HandoverContext, signal: AbortSignal): ReturnType<StateMover['move']> {
    this.#entered();
    await new Promise<void>((r) => (this.open = r));
    return this.inner.move(ctx, signal);
  }
}
