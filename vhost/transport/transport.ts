/**
 * The byte-stream interface both roles are written against, kept apart from framing and roles
 * (as rust-vmm vhost's `connection.rs` is from its front-end and back-end). Implementations:
 * a Unix socket (unix.ts) and an in-memory duplex pair (memory.ts), with identical behaviour:
 * bytes arrive in order, possibly re-chunked; `close` flushes what was written and then ends
 * both directions; the close callback runs once, on either side, whoever closed.
 */
export interface TransportSink {
  /**
   * Bytes from the peer. The buffer is owned by the receiver from then on, and so are `fds`:
   * descriptors that arrived as SCM_RIGHTS with this chunk (unix(7); only transports with
   * `carriesFds`). They came with the sendmsg whose first byte this chunk holds; the receiver
   * closes every one it does not keep.
   */
  data(chunk: Buffer, fds?: number[]): void;
  /** The stream ended (err: why, when it was not a clean close). Called once. */
  close(err?: Error): void;
}

export interface Transport {
  /** Install the receive callbacks. Data that arrived earlier is delivered after this call. */
  start(sink: TransportSink): void;
  /**
   * Queue bytes for the peer. The transport takes ownership of `data` (do not modify it). `fds`
   * travel as SCM_RIGHTS with its first byte (the kernel duplicates them: they stay the caller's);
   * EOPNOTSUPP on a transport without `carriesFds`.
   */
  write(data: Uint8Array, fds?: readonly number[]): void;
  /** Whether this transport passes file descriptors (a Unix socket with the native addon). */
  readonly carriesFds?: boolean;
  /**
   * Flow control: with `false`, stop delivering received bytes (they wait in the transport — the
   * kernel socket buffer for a Unix socket, so the peer's writes eventually block); with `true`,
   * deliver them again. Reading is on after start().
   */
  setReading(on: boolean): void;
  /** Bytes written and not yet taken by the peer or the kernel (socket transports). */
  readonly pendingWriteBytes?: number;
  /** End at once, dropping queued bytes (socket transports); the close callback still runs once. */
  abort?(): void;
  /** Flush queued bytes, then end the stream. Idempotent. */
  close(): void;
  readonly closed: boolean;
  /** Short description for logs, e.g. the socket path. */
  readonly label: string;
}
