/** Labs: multi-VM lab files with networks, snapshots, reset and exercises that check themselves. */
export { loadLab, checkLabText, findLabFile, shippedLabs, localize, SHIPPED_LAB_DIR, type LabSpec, type LoadedLab } from './load.js';
export { defaultPrefix, assertPrefix, labId } from './plan.js';
export { labUp, hostCommands, BASELINE, type LabUpOptions, type LabUpResult } from './up.js';
export { labDown, type LabDownResult } from './down.js';
export { labSnapshot, labReset, labSnapshotDelete } from './snapshot.js';
export { labCheck, labSolve, type LabCheckResult, type CheckResult } from './check.js';
export { listLabs, labStatus, labVmName, type LabSummary, type LabStatus } from './status.js';
