/** Snapshots: create (internal or external, vmctl picks and says why), list as a tree, info, revert (external ones too), delete (merging external layers back). */
export { createSnapshot, chooseKind, type SnapshotCreateOptions, type SnapshotCreateResult } from './create.js';
export { listSnapshots, findSnapshot, type SnapshotEntry } from './list.js';
export { revertSnapshot, type SnapshotRevertOptions, type SnapshotRevertResult } from './revert.js';
export { deleteSnapshot, type SnapshotDeleteResult } from './remove.js';
export { parseSnapshotXml, buildSnapshotXml, parseSnapshotFiles, type SnapshotInfo } from './model.js';
