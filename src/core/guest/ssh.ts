/**
 * SSH into guests (ssh2 client): `vmctl ssh`, `vmctl ip`, readiness waits.
 * One import for what lives in:
 *
 *   ssh-connect.ts       connectGuest, GuestTarget/GuestConnection (direct or tunnelled)
 *   ssh-hostkey.ts       the pinned-host-key policy (no trust on first use)
 *   ssh-errors.ts        VmctlErrors with details.sshStage (how far a connection got)
 *   ssh-exec.ts          guestExec, guestCapture, guestShell
 *   ssh-wait.ts          waitForSsh (retry until login works with the pinned key), connectRunningGuest
 *   cloudinit-status.ts  `cloud-init status` parsing, waitForCloudInit
 */
export { sshStageOf, type SshStage } from './ssh-errors.js';
export { checkPinnedHostKey } from './ssh-hostkey.js';
export { connectGuest, type ConnectGuestOptions, type GuestConnection, type GuestTarget, type GuestTunnel } from './ssh-connect.js';
export { guestCapture, guestExec, guestShell, type GuestCaptureResult, type GuestExecOptions, type GuestShellOptions } from './ssh-exec.js';
export { connectRunningGuest, HEDGE_MS, MAX_IN_FLIGHT, waitForSsh, type SshAttempt, type WaitForSshOptions } from './ssh-wait.js';
export { CLOUD_INIT_RESULT_WAIT, parseCloudInitResult, parseCloudInitStatusJson, parseCloudInitStatusText, waitForCloudInit, type CloudInitStatus } from './cloudinit-status.js';
