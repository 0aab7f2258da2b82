/**
 * The VM core as the CLI loads it (lazily, in one chunk): create (plan +
 * apply), the power verbs, delete, info, readiness, and the SSH-forward helpers.
 * Each verb runs inside an OpContext (src/core/op) and never prints.
 */
export { createVm, planCreate, applyCreate, MIN_FREE_FOR_VM, type CreateOptions, type CreatePlan, type CreateResult, type PlannedVolume } from './create.js';
export { startVm, stopVm, rebootVm, suspendVm, resumeVm, destroyVm } from './power.js';
export { deleteVm, type DeleteResult } from './remove.js';
export { vmInfo, vmSshTarget, type VmInfo } from './info.js';
export { findVm, lookupVm } from './domain.js';
export { guestAddresses, PHASES, type Phase, type PhaseEvent, type WaitTarget } from './readiness.js';
export { forwardPortRange, tunnelFor } from './forward.js';
