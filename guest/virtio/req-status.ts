/**
 * How a request ends: a virtio-iommu status for the tail, and the mapping from host errnos
 * (docs/protocol.md replies) to statuses — the inverse of Linux's viommu_get_req_errno
 * (virtio 1.2 §5.13.6 "Device operations") where one exists.
 */
import { isVsvaError, type ErrnoName } from '../../src/errors.js';
import { ReqStatus, STATUS_NAMES } from './iommu-spec.js';

/** Thrown inside a request handler to end the request with `status` (state unchanged). */
export class ReqFail extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(`${STATUS_NAMES[status] ?? status}: ${message}`);
    this.name = 'ReqFail';
  }
}

export function reject(status: number, message: string): never {
  throw new ReqFail(status, message);
}

const BY_ERRNO: Partial<Record<ErrnoName, number>> = {
  EINVAL: ReqStatus.INVAL,
  ERANGE: ReqStatus.RANGE,
  ENOENT: ReqStatus.NOENT,
  EFAULT: ReqStatus.FAULT,
  ENOMEM: ReqStatus.NOMEM,
  ENOSPC: ReqStatus.NOMEM,
  EOPNOTSUPP: ReqStatus.UNSUPP,
  ENOTTY: ReqStatus.UNSUPP,
  ENODEV: ReqStatus.UNSUPP,
  EIO: ReqStatus.IOERR,
};

/** Status for a failure thrown while serving a request. */
export function statusOf(e: unknown): number {
  if (e instanceof ReqFail) return e.status;
  if (isVsvaError(e)) return BY_ERRNO[e.code] ?? ReqStatus.DEVERR;
  return ReqStatus.DEVERR;
}
