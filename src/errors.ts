/**
 * Errno-style errors used across vsva.
 *
 * Every failure a caller can act on carries one of these codes (Linux numbering, as the VFIO /
 * IOASID / iommufd uAPIs return them) plus a message that says exactly what was wrong. Wire
 * replies carry the negative errno; `VsvaError.fromErrno` turns one back into an error.
 */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EMFILE: 24,
  ENOTTY: 25,
  ENOSPC: 28,
  EMLINK: 31,
  ERANGE: 34,
  ELOOP: 40,
  EPROTO: 71,
  EOVERFLOW: 75,
  EUSERS: 87,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ECONNRESET: 104,
  ENOBUFS: 105,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
} as const;

export type ErrnoName = keyof typeof Errno;

const byNumber = new Map<number, ErrnoName>(
  (Object.entries(Errno) as [ErrnoName, number][]).map(([name, value]) => [value, name]),
);

/** Name of a positive errno value, or undefined when vsva does not use it. */
export function errnoName(value: number): ErrnoName | undefined {
  return byNumber.get(Math.abs(value));
}

/** What a VsvaError says, without its errno prefix, plus optional structured context. */
export interface VsvaErrorDetail {
  /** The message as given to the constructor (`error.message` is `${code}: ${detail.message}`). */
  readonly message: string;
  /** Machine-readable context (which request, which PASID, ...), when the thrower supplies it. */
  readonly fields?: Readonly<Record<string, string | number | bigint | boolean>>;
}

export class VsvaError extends Error {
  readonly code: ErrnoName;
  readonly errno: number;
  readonly detail: VsvaErrorDetail;

  constructor(code: ErrnoName, message: string, fields?: VsvaErrorDetail['fields']) {
    super(`${code}: ${message}`);
    this.name = 'VsvaError';
    this.code = code;
    this.errno = Errno[code];
    this.detail = fields === undefined ? { message } : { message, fields };
  }

  /** Rebuild an error from a (negative or positive) errno received on the wire. */
  static fromErrno(value: number, message: string): VsvaError {
    return new VsvaError(errnoName(value) ?? 'EIO', message);
  }

  /** The same error (code, fields) with `context: ` put in front of its detail message. */
  withContext(context: string): VsvaError {
    return new VsvaError(this.code, `${context}: ${this.detail.message}`, this.detail.fields);
  }
}

/** Throw a VsvaError. Use as `cond || fail('EINVAL', '...')` or in a statement position. */
export function fail(code: ErrnoName, message: string): never {
  throw new VsvaError(code, message);
}

export function isVsvaError(e: unknown, code?: ErrnoName): e is VsvaError {
  return e instanceof VsvaError && (code === undefined || e.code === code);
}

/** Negative errno for a thrown value: VsvaError keeps its code, anything else is EIO. */
export function toNegErrno(e: unknown): number {
  return e instanceof VsvaError ? -e.errno : -Errno.EIO;
}
