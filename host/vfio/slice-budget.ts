/**
 * How long one slice of a sliced request or release may run before the host yields to the event
 * loop (docs/performance.md, "Fairness and snapshots"). Slices are bounded by a count of work
 * units (mappings, routes, PASIDs) and by this time budget, whichever comes first: a count alone
 * lets a slice run long when its code runs cold (the first release of a host process), when the
 * machine is slow, or when the units cost more than measured. The budget is checked after each
 * unit (or small chunk of units), so a slice ends within one unit past it; a young-generation
 * collection inside a slice is not bounded by it (bin/young-generation.js bounds those).
 */

/** Time budget of one slice (ms): another VM's request waits at most about this long behind one. */
export const SLICE_BUDGET_MS = 0.5;

/** The clock slices are measured with (ms, monotonic). Tests replace `now` to make every unit spend the budget. */
export const sliceClock = { now: (): number => performance.now() };

/** A slice started now: `spent()` tells whether its budget is used up. */
export function sliceTimer(budgetMs = SLICE_BUDGET_MS): { spent(): boolean; restart(): void } {
  let start = sliceClock.now();
  return {
    spent: () => sliceClock.now() - start >= budgetMs,
    restart: () => {
      start = sliceClock.now();
    },
  };
}

/**
 * Between two slices: let the event loop serve other VMs' requests (setImmediate runs after the
 * I/O the loop polls meanwhile), as vfio_remove_dma's cond_resched() lets other threads run.
 */
export function nextSlice(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}
