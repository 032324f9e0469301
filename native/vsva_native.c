/*
 * vsva_native.c: the native foundation for guest RAM shared the vhost-user way (issue 15).
 * memfd_create, mmap/munmap into ArrayBuffers, and Unix stream socket I/O that carries file
 * descriptors as SCM_RIGHTS ancillary data, which is how a vhost-user front-end passes guest RAM
 * regions in SET_MEM_TABLE (docs/protocol.md). Also the calling thread's timer slack
 * (prctl(2) PR_SET_TIMERSLACK), for the host's short sleep between slices of a long job.
 *
 * Why our own addon and not packages: mmap-io needs CXXFLAGS=-std=c++17 on Node 20 and node-gyp,
 * which downloads headers; usocket (fd passing) and shm-typed-array (shared memory) each cover
 * only half. This one C file, compiled directly with the system compiler by
 * scripts/build-native.mjs against Node's own headers (node_api.h, uv.h), covers both and
 * downloads nothing. Without it vsva falls back to positioned I/O (src/native/native.ts).
 *
 * References: memfd_create(2), fcntl(2) file seals, mmap(2), unix(7) and cmsg(3) (SCM_RIGHTS),
 * Node-API (https://nodejs.org/api/n-api.html), libuv uv_poll_t
 * (https://docs.libuv.org/en/v1.x/poll.html).
 *
 * Errors: every failing system call throws an Error whose `code` is the errno name ('EBADF', from
 * libuv's uv_err_name_r), `errno` the positive Linux value, `syscall` the call, and whose message
 * names the call. Bad arguments throw a TypeError with code 'EINVAL'.
 * Global state: only the live-mapping counter (atomic, since worker threads share this library).
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 253            /* SCM_MAX_FD, Linux include/net/scm.h: fds per sendmsg */
#define READ_BUFFER 65536      /* bytes per recvmsg of a reader */
#define READS_PER_WAKE 16      /* recvmsg calls per readable event before yielding to the loop */
#define MAPPING_MAGIC 0x76737661u

static atomic_long live_mappings;

/* ---- errors and arguments ------------------------------------------------------------------ */

static napi_value errno_error(napi_env env, int err, const char *call, const char *detail) {
  char code[64], text[128], msg[512];
  uv_err_name_r(-err, code, sizeof code);
  const char *reason = detail ? detail : strerror_r(err, text, sizeof text);
  snprintf(msg, sizeof msg, "%s: %s", call, reason);
  napi_value c, m, e, v;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, c, m, &e);
  napi_create_int32(env, err, &v);
  napi_set_named_property(env, e, "errno", v);
  napi_create_string_utf8(env, call, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, e, "syscall", v);
  return e;
}

static napi_value throw_errno(napi_env env, int err, const char *call) {
  napi_throw(env, errno_error(env, err, call, NULL));
  return NULL;
}

static napi_value throw_arg(napi_env env, const char *msg) {
  napi_throw_type_error(env, "EINVAL", msg);
  return NULL;
}

/* A Node-API call failed: keep its pending exception, or throw one that names the call. */
static napi_value napi_failed(napi_env env, const char *what) {
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[256];
  snprintf(msg, sizeof msg, "%s failed: %s", what, info && info->error_message ? info->error_message : "?");
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_error(env, "EIO", msg);
  return NULL;
}

#define NAPI(call) do { if ((call) != napi_ok) return napi_failed(env, #call); } while (0)

static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv, size_t *argc) {
  size_t n = want;
  if (napi_get_cb_info(env, info, &n, argv, NULL, NULL) != napi_ok) {
    napi_failed(env, "napi_get_cb_info");
    return false;
  }
  if (argc) *argc = n;
  for (size_t i = n; i < want; i++) napi_get_undefined(env, &argv[i]);
  return true;
}

static bool arg_int(napi_env env, napi_value v, const char *name, int64_t min, int64_t max, int64_t *out) {
  napi_valuetype t;
  double d;
  char msg[160];
  /* range first: casting NaN or an out-of-range double to an integer is undefined behaviour */
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number || napi_get_value_double(env, v, &d) != napi_ok ||
      !(d >= (double)min && d <= (double)max) || d != (double)(int64_t)d) {
    snprintf(msg, sizeof msg, "%s must be an integer in [%lld, %lld]", name, (long long)min, (long long)max);
    throw_arg(env, msg);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

static bool arg_fd(napi_env env, napi_value v, const char *name, int *fd) {
  int64_t x;
  if (!arg_int(env, v, name, 0, INT_MAX, &x)) return false;
  *fd = (int)x;
  return true;
}

/* A size or offset: a non-negative safe-integer number or a bigint that fits in int64. */
static bool arg_u64(napi_env env, napi_value v, const char *name, uint64_t *out) {
  napi_valuetype t;
  char msg[160];
  if (napi_typeof(env, v, &t) == napi_ok && t == napi_bigint) {
    bool lossless = false;
    if (napi_get_value_bigint_uint64(env, v, out, &lossless) == napi_ok && lossless && *out <= (uint64_t)INT64_MAX) return true;
    snprintf(msg, sizeof msg, "%s must be a bigint in [0, 2^63)", name);
    throw_arg(env, msg);
    return false;
  }
  int64_t x;
  if (!arg_int(env, v, name, 0, (INT64_C(1) << 53) - 1, &x)) return false;
  *out = (uint64_t)x;
  return true;
}

static bool arg_bool(napi_env env, napi_value v, const char *name, bool *out) {
  char msg[160];
  if (napi_get_value_bool(env, v, out) == napi_ok) return true;
  snprintf(msg, sizeof msg, "%s must be a boolean", name);
  throw_arg(env, msg);
  return false;
}

static bool arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t cap) {
  size_t len = 0;
  char msg[160];
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok || len == 0 || len >= cap) {
    snprintf(msg, sizeof msg, "%s must be a non-empty string shorter than %zu bytes", name, cap);
    throw_arg(env, msg);
    return false;
  }
  napi_get_value_string_utf8(env, v, buf, cap, &len);
  if (strlen(buf) != len) {
    snprintf(msg, sizeof msg, "%s must not contain NUL", name);
    throw_arg(env, msg);
    return false;
  }
  return true;
}

static napi_value make_int(napi_env env, int64_t x) {
  napi_value v;
  napi_create_int64(env, x, &v);
  return v;
}

/* ---- memfd, open, stat, seals, close ----------------------------------------------------------- */

/* memfdCreate(name, size) -> fd: memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING) + ftruncate. */
static napi_value js_memfd_create(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char name[250]; /* memfd_create(2): at most 249 bytes */
  uint64_t size;
  if (!get_args(env, info, 2, argv, NULL) || !arg_string(env, argv[0], "name", name, sizeof name) ||
      !arg_u64(env, argv[1], "size", &size)) return NULL;
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return throw_errno(env, errno, "memfd_create");
  if (ftruncate(fd, (off_t)size) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "ftruncate");
  }
  return make_int(env, fd);
}

/* openNoFollow(dirfd | -1, path, writable) -> fd: openat with O_NOFOLLOW | O_CLOEXEC. O_NOFOLLOW
 * refuses a symbolic link in the LAST component only (ELOOP); confine directories with dirfd. */
static napi_value js_open_no_follow(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int64_t dirfd;
  char path[PATH_MAX];
  bool writable;
  if (!get_args(env, info, 3, argv, NULL) || !arg_int(env, argv[0], "dirfd", -1, INT_MAX, &dirfd) ||
      !arg_string(env, argv[1], "path", path, sizeof path) || !arg_bool(env, argv[2], "writable", &writable)) return NULL;
  /* O_NONBLOCK: opening a FIFO never waits for a peer (fifo(7)); no effect on regular files. */
  int flags = (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  int fd = openat(dirfd < 0 ? AT_FDCWD : (int)dirfd, path, flags);
  if (fd < 0) return throw_errno(env, errno, "openat");
  return make_int(env, fd);
}

/* openDirectory(path) -> fd: open(path, O_DIRECTORY | O_RDONLY | O_CLOEXEC), a handle later
 * openat(2) calls resolve names against — the directory itself, whatever its path becomes
 * (renamed, or replaced by a symbolic link) after this call. ENOTDIR when it is not one. */
static napi_value js_open_directory(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char path[PATH_MAX];
  if (!get_args(env, info, 1, argv, NULL) || !arg_string(env, argv[0], "path", path, sizeof path)) return NULL;
  int fd = open(path, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open");
  return make_int(env, fd);
}

static void set_prop(napi_env env, napi_value obj, const char *key, napi_value v) {
  napi_set_named_property(env, obj, key, v);
}

static napi_value js_bigint(napi_env env, uint64_t x) {
  napi_value v;
  napi_create_bigint_uint64(env, x, &v);
  return v;
}

static napi_value js_bool(napi_env env, bool b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

/* fstat(fd) -> { mode, size, nlink, uid, gid, dev, ino, isReg, isDir, isSock, isFifo, isChr } */
static napi_value js_fstat(napi_env env, napi_callback_info info) {
  napi_value argv[1], o;
  int fd;
  struct stat st;
  if (!get_args(env, info, 1, argv, NULL) || !arg_fd(env, argv[0], "fd", &fd)) return NULL;
  if (fstat(fd, &st) != 0) return throw_errno(env, errno, "fstat");
  NAPI(napi_create_object(env, &o));
  set_prop(env, o, "mode", make_int(env, st.st_mode));
  set_prop(env, o, "size", js_bigint(env, (uint64_t)st.st_size));
  set_prop(env, o, "nlink", make_int(env, (int64_t)st.st_nlink));
  set_prop(env, o, "uid", make_int(env, st.st_uid));
  set_prop(env, o, "gid", make_int(env, st.st_gid));
  set_prop(env, o, "dev", js_bigint(env, (uint64_t)st.st_dev));
  set_prop(env, o, "ino", js_bigint(env, (uint64_t)st.st_ino));
  set_prop(env, o, "isReg", js_bool(env, S_ISREG(st.st_mode)));
  set_prop(env, o, "isDir", js_bool(env, S_ISDIR(st.st_mode)));
  set_prop(env, o, "isSock", js_bool(env, S_ISSOCK(st.st_mode)));
  set_prop(env, o, "isFifo", js_bool(env, S_ISFIFO(st.st_mode)));
  set_prop(env, o, "isChr", js_bool(env, S_ISCHR(st.st_mode)));
  return o;
}

/* peerCredentials(sockfd) -> { pid, uid, gid } of the process that connected a Unix socket,
 * as the kernel recorded it at connect(2): getsockopt(SO_PEERCRED), unix(7). */
static napi_value js_peer_credentials(napi_env env, napi_callback_info info) {
  napi_value argv[1], o;
  int fd;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (!get_args(env, info, 1, argv, NULL) || !arg_fd(env, argv[0], "fd", &fd)) return NULL;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return throw_errno(env, errno, "getsockopt(SO_PEERCRED)");
  NAPI(napi_create_object(env, &o));
  set_prop(env, o, "pid", make_int(env, cred.pid));
  set_prop(env, o, "uid", make_int(env, cred.uid));
  set_prop(env, o, "gid", make_int(env, cred.gid));
  return o;
}

/* getSeals(fd) -> F_SEAL_* mask (EINVAL for files that cannot be sealed, e.g. not a memfd). */
static napi_value js_get_seals(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv, NULL) || !arg_fd(env, argv[0], "fd", &fd)) return NULL;
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) return throw_errno(env, errno, "fcntl(F_GET_SEALS)");
  return make_int(env, seals);
}

/* addSeals(fd, mask): F_ADD_SEALS. Sealing SHRINK stops a peer from truncating mapped RAM, which
 * would make the other side's accesses past the new end raise SIGBUS (mmap(2)). */
static napi_value js_add_seals(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int64_t seals;
  if (!get_args(env, info, 2, argv, NULL) || !arg_fd(env, argv[0], "fd", &fd) ||
      !arg_int(env, argv[1], "seals", 0, INT_MAX, &seals)) return NULL;
  if (fcntl(fd, F_ADD_SEALS, (int)seals) != 0) return throw_errno(env, errno, "fcntl(F_ADD_SEALS)");
  return NULL;
}

/* close(fd). EINTR counts as closed: Linux releases the descriptor before it can occur (close(2)). */
static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv, NULL) || !arg_fd(env, argv[0], "fd", &fd)) return NULL;
  if (close(fd) != 0 && errno != EINTR) return throw_errno(env, errno, "close");
  return NULL;
}

/* ---- mappings ------------------------------------------------------------------------------ */

typedef struct {
  uint32_t magic;
  bool unmapped;
  void *addr;
  size_t len;
} mapping_t;

static void unmap_once(mapping_t *m) {
  if (m->unmapped) return;
  munmap(m->addr, m->len);
  m->unmapped = true;
  atomic_fetch_sub(&live_mappings, 1);
}

/* Runs on the JS thread once the ArrayBuffer's backing store is gone: garbage collected, or
 * detached by munmap() (then it only frees the record). */
static void mapping_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  mapping_t *m = hint;
  unmap_once(m);
  m->magic = 0;
  free(m);
}

/* mmap(fd, size, offset, writable) -> ArrayBuffer over a MAP_SHARED mapping. The whole range
 * must lie inside a regular file: touching a page past its end raises SIGBUS (mmap(2)). */
static napi_value js_mmap(napi_env env, napi_callback_info info) {
  napi_value argv[4], ab;
  int fd;
  uint64_t size, offset;
  bool writable;
  struct stat st;
  if (!get_args(env, info, 4, argv, NULL) || !arg_fd(env, argv[0], "fd", &fd) || !arg_u64(env, argv[1], "size", &size) ||
      !arg_u64(env, argv[2], "offset", &offset) || !arg_bool(env, argv[3], "writable", &writable)) return NULL;
  if (size == 0 || size > (uint64_t)SIZE_MAX) return throw_arg(env, "size must be at least 1");
  if (fstat(fd, &st) != 0) return throw_errno(env, errno, "fstat");
  if (S_ISREG(st.st_mode) && (offset > (uint64_t)st.st_size || size > (uint64_t)st.st_size - offset)) {
    napi_throw(env, errno_error(env, EINVAL, "mmap", "range extends past the end of the file"));
    return NULL;
  }
  void *p = mmap(NULL, (size_t)size, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, (off_t)offset);
  if (p == MAP_FAILED) return throw_errno(env, errno, "mmap");
  mapping_t *m = malloc(sizeof *m);
  if (!m) {
    munmap(p, (size_t)size);
    return throw_errno(env, ENOMEM, "malloc");
  }
  *m = (mapping_t){ .magic = MAPPING_MAGIC, .unmapped = false, .addr = p, .len = (size_t)size };
  atomic_fetch_add(&live_mappings, 1);
  if (napi_create_external_arraybuffer(env, p, (size_t)size, mapping_finalize, m, &ab) != napi_ok) {
    unmap_once(m);
    free(m);
    return napi_failed(env, "napi_create_external_arraybuffer");
  }
  /* The wrap lets munmap() find the record; the ArrayBuffer's finalizer owns it. */
  if (napi_wrap(env, ab, m, NULL, NULL, NULL) != napi_ok) {
    napi_detach_arraybuffer(env, ab);
    unmap_once(m);
    return napi_failed(env, "napi_wrap");
  }
  return ab;
}

/* munmap(ab) -> true if this call unmapped it, false if it was already detached. Detaches first,
 * so no view can reach the freed pages afterwards (byteLength becomes 0). */
static napi_value js_munmap(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bool is_ab = false, detached = false;
  void *p = NULL;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  if (napi_is_arraybuffer(env, argv[0], &is_ab) != napi_ok || !is_ab) return throw_arg(env, "munmap takes an ArrayBuffer");
  NAPI(napi_is_detached_arraybuffer(env, argv[0], &detached));
  if (detached) return js_bool(env, false);
  if (napi_unwrap(env, argv[0], &p) != napi_ok || !p || ((mapping_t *)p)->magic != MAPPING_MAGIC) {
    napi_throw(env, errno_error(env, EINVAL, "munmap", "not an ArrayBuffer returned by mmap()"));
    return NULL;
  }
  mapping_t *m = p;
  if (m->unmapped) return js_bool(env, false);
  NAPI(napi_detach_arraybuffer(env, argv[0]));
  unmap_once(m);
  return js_bool(env, true);
}

static napi_value js_mapping_count(napi_env env, napi_callback_info info) {
  (void)info;
  return make_int(env, atomic_load(&live_mappings));
}

/* ---- sending fds --------------------------------------------------------------------------- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* sendFds(sockfd, data, fds, timeoutMs = 2000) -> bytes sent (all of data). The fds travel as one
 * SCM_RIGHTS message with the first bytes that the kernel accepts. On a full socket it waits in
 * poll() up to the deadline, blocking the JS thread: meant for small control frames. On error
 * the Error carries bytesSent; a partial frame leaves the stream unusable. */
static napi_value js_send_fds(napi_env env, napi_callback_info info) {
  napi_value argv[4], err;
  size_t argc;
  int fd, fds[MAX_FDS];
  int64_t timeout = 2000;
  bool is_ta = false, is_array = false;
  napi_typedarray_type type;
  size_t len = 0;
  void *data = NULL;
  uint32_t nfds = 0;
  if (!get_args(env, info, 4, argv, &argc) || !arg_fd(env, argv[0], "sockfd", &fd)) return NULL;
  if (napi_is_typedarray(env, argv[1], &is_ta) != napi_ok || !is_ta) return throw_arg(env, "data must be a Uint8Array");
  NAPI(napi_get_typedarray_info(env, argv[1], &type, &len, &data, NULL, NULL));
  if (type != napi_uint8_array) return throw_arg(env, "data must be a Uint8Array");
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array) return throw_arg(env, "fds must be an array of fds");
  NAPI(napi_get_array_length(env, argv[2], &nfds));
  if (nfds > MAX_FDS) return throw_arg(env, "at most 253 fds per message (SCM_MAX_FD)");
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value v;
    NAPI(napi_get_element(env, argv[2], i, &v));
    if (!arg_fd(env, v, "fds[i]", &fds[i])) return NULL;
  }
  if (argc >= 4 && !arg_int(env, argv[3], "timeoutMs", 0, INT_MAX, &timeout)) return NULL;
  if (len == 0 && nfds > 0) return throw_arg(env, "fds need at least one data byte on a stream socket");

  union { struct cmsghdr align; char bytes[CMSG_SPACE(sizeof(int) * MAX_FDS)]; } control;
  int64_t deadline = now_ms() + timeout;
  size_t sent = 0;
  while (sent < len) {
    struct iovec iov = { .iov_base = (char *)data + sent, .iov_len = len - sent };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (sent == 0 && nfds > 0) {
      memset(&control, 0, sizeof control);
      msg.msg_control = control.bytes;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      sent += (size_t)n;
      continue;
    }
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      int64_t left = deadline - now_ms();
      if (left > 0) {
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        if (poll(&pfd, 1, (int)(left > INT_MAX ? INT_MAX : left)) >= 0 || errno == EINTR) continue;
        e = errno;
      } else {
        e = ETIMEDOUT;
      }
    }
    err = errno_error(env, e, "sendmsg", NULL);
    napi_set_named_property(env, err, "bytesSent", make_int(env, (int64_t)sent));
    napi_throw(env, err);
    return NULL;
  }
  return make_int(env, (int64_t)sent);
}

/* ---- reading data and fds ------------------------------------------------------------------ */

enum { READER_OPEN, READER_CLOSING };

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref self;                /* the handle object: strong while open */
  napi_ref callback;            /* onRead */
  napi_async_context async;
  napi_async_cleanup_hook_handle cleanup;
  int fd;
  int state;
  bool delivering;              /* inside onRead: defer napi_async_destroy */
  unsigned char buf[READ_BUFFER];
  union { struct cmsghdr align; char bytes[CMSG_SPACE(sizeof(int) * MAX_FDS)]; } control;
} reader_t;

static void reader_closed(uv_handle_t *h) {
  reader_t *r = h->data;
  if (r->cleanup) napi_remove_async_cleanup_hook(r->cleanup);
  free(r);
}

static void reader_destroy_async(reader_t *r) {
  if (r->async && !r->delivering) {
    napi_async_destroy(r->env, r->async);
    r->async = NULL;
  }
}

/* Stop polling now (the fd may be closed right after), drop the JS references, close the handle.
 * The record is freed by the close callback. Needs an open handle scope. */
static void reader_finish(reader_t *r) {
  if (r->state != READER_OPEN) return;
  r->state = READER_CLOSING;
  napi_env env = r->env;
  uv_poll_stop(&r->poll);
  if (r->self) {
    napi_value obj;
    void *unused;
    if (napi_get_reference_value(env, r->self, &obj) == napi_ok && obj) napi_remove_wrap(env, obj, &unused);
    napi_delete_reference(env, r->self);
    r->self = NULL;
  }
  if (r->callback) {
    napi_delete_reference(env, r->callback);
    r->callback = NULL;
  }
  reader_destroy_async(r);
  uv_close((uv_handle_t *)&r->poll, reader_closed);
}

/* Environment teardown (process exit, worker end) with the reader still open. */
static void reader_cleanup_hook(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  reader_t *r = arg;
  if (r->state != READER_OPEN) return; /* the pending close callback removes the hook */
  napi_handle_scope scope;
  napi_open_handle_scope(r->env, &scope);
  reader_finish(r);
  napi_close_handle_scope(r->env, scope);
}

static void close_fds(const int *fds, int n) {
  for (int i = 0; i < n; i++) close(fds[i]);
}

/* Calls onRead(data | null, fds, errno). From here on the fds belong to JS. A final call (EOF or
 * error) stops the reader first, so the callback and the microtasks that run after it (promise
 * continuations drain inside napi_make_callback) already see it stopped. */
static void reader_deliver(reader_t *r, const unsigned char *data, size_t len, const int *fds, int nfds, int err,
                           bool final) {
  napi_env env = r->env;
  napi_value cb, recv, argv[3], v;
  bool ok = napi_get_reference_value(env, r->callback, &cb) == napi_ok &&
            napi_get_reference_value(env, r->self, &recv) == napi_ok &&
            (data ? napi_create_buffer_copy(env, len, data, NULL, &argv[0]) : napi_get_null(env, &argv[0])) == napi_ok &&
            napi_create_array_with_length(env, (size_t)nfds, &argv[1]) == napi_ok &&
            napi_create_int32(env, err, &argv[2]) == napi_ok;
  for (int i = 0; ok && i < nfds; i++)
    ok = napi_create_int32(env, fds[i], &v) == napi_ok && napi_set_element(env, argv[1], (uint32_t)i, v) == napi_ok;
  if (!ok) {
    close_fds(fds, nfds);
    if (final) reader_finish(r);
    return;
  }
  r->delivering = true; /* keeps r->async alive through reader_finish */
  if (final) reader_finish(r);
  napi_status st = napi_make_callback(env, r->async, recv, cb, 3, argv, NULL);
  r->delivering = false;
  if (st == napi_pending_exception) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    napi_fatal_exception(env, e); /* 'uncaughtException', as for any event callback */
  }
}

/* One non-blocking recvmsg into r->buf. Returns bytes (0 = EOF) or -errno. */
static ssize_t reader_recv(reader_t *r, int *fds, int *nfds) {
  struct iovec iov = { .iov_base = r->buf, .iov_len = sizeof r->buf };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = r->control.bytes,
                        .msg_controllen = sizeof r->control.bytes };
  ssize_t n;
  *nfds = 0;
  do n = recvmsg(r->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (*nfds < MAX_FDS) fds[(*nfds)++] = fd; else close(fd);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) { /* cannot happen with room for SCM_MAX_FD; never hand out half */
    close_fds(fds, *nfds);
    *nfds = 0;
    return -EMSGSIZE;
  }
  return n;
}

static void reader_on_poll(uv_poll_t *h, int status, int events) {
  (void)events;
  reader_t *r = h->data;
  if (r->state != READER_OPEN) return;
  napi_handle_scope scope;
  napi_open_handle_scope(r->env, &scope);
  /* libuv reports POLLERR as status UV_EBADF and stops the watcher: read on to learn the real
   * error (e.g. ECONNRESET), and to deliver what is still queued before it. */
  int budget = status < 0 ? INT_MAX : READS_PER_WAKE;
  while (r->state == READER_OPEN && budget-- > 0) {
    int fds[MAX_FDS], nfds;
    ssize_t n = reader_recv(r, fds, &nfds);
    if (n == -EAGAIN || n == -EWOULDBLOCK) {
      if (status < 0) reader_deliver(r, NULL, 0, NULL, 0, -status, true);
      break;
    }
    if (n <= 0) { /* error, or EOF (errno 0) */
      close_fds(fds, nfds);
      reader_deliver(r, NULL, 0, NULL, 0, (int)-n, true);
      break;
    }
    reader_deliver(r, r->buf, (size_t)n, fds, nfds, 0, false);
    if ((size_t)n < sizeof r->buf && nfds == 0 && status >= 0) break; /* drained; poll is level-triggered */
  }
  if (r->state == READER_CLOSING) reader_destroy_async(r);
  napi_close_handle_scope(r->env, scope);
}

/* startReader(sockfd, onRead) -> handle. The fd must not be watched by libuv already (EEXIST):
 * accept with pauseOnConnect and never read it from JS. The reader does not own the fd. */
static napi_value js_start_reader(napi_env env, napi_callback_info info) {
  napi_value argv[2], obj, name;
  napi_valuetype t;
  int fd;
  uv_loop_t *loop;
  if (!get_args(env, info, 2, argv, NULL) || !arg_fd(env, argv[0], "sockfd", &fd)) return NULL;
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function) return throw_arg(env, "onRead must be a function");
  NAPI(napi_get_uv_event_loop(env, &loop));
  reader_t *r = calloc(1, sizeof *r);
  if (!r) return throw_errno(env, ENOMEM, "calloc");
  r->env = env;
  r->fd = fd;
  r->state = READER_OPEN;
  int rc = uv_poll_init(loop, &r->poll, fd);
  if (rc < 0) {
    free(r);
    return throw_errno(env, -rc, "uv_poll_init");
  }
  r->poll.data = r;
  bool ok = napi_create_object(env, &obj) == napi_ok && napi_wrap(env, obj, r, NULL, NULL, NULL) == napi_ok &&
            napi_create_reference(env, obj, 1, &r->self) == napi_ok &&
            napi_create_reference(env, argv[1], 1, &r->callback) == napi_ok &&
            napi_create_string_utf8(env, "vsva.NativeReader", NAPI_AUTO_LENGTH, &name) == napi_ok &&
            napi_async_init(env, obj, name, &r->async) == napi_ok &&
            napi_add_async_cleanup_hook(env, reader_cleanup_hook, r, &r->cleanup) == napi_ok;
  rc = ok ? uv_poll_start(&r->poll, UV_READABLE, reader_on_poll) : 0;
  if (!ok || rc < 0) {
    reader_finish(r);
    return ok ? throw_errno(env, -rc, "uv_poll_start") : napi_failed(env, "startReader setup");
  }
  return obj;
}

/* stopReader(handle) -> true if this call stopped it; false when already stopped (twice, after
 * EOF or an error, which stop the reader themselves). */
static napi_value js_stop_reader(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  napi_valuetype t;
  void *p = NULL;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_object) return throw_arg(env, "stopReader takes a reader handle");
  if (napi_unwrap(env, argv[0], &p) != napi_ok || !p) return js_bool(env, false);
  reader_finish(p);
  return js_bool(env, true);
}

/* setTimerSlack(ns) -> the previous slack (ns): prctl(PR_SET_TIMERSLACK) for the calling thread
 * (prctl(2)): how late the kernel may end this thread's timed sleeps so as to merge wake-ups
 * (default 50 µs). getTimerSlack() -> the calling thread's slack (PR_GET_TIMERSLACK). */
static napi_value js_get_timer_slack(napi_env env, napi_callback_info info) {
  (void)info;
  int rc = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  if (rc < 0) return throw_errno(env, errno, "prctl");
  return make_int(env, rc);
}

static napi_value js_set_timer_slack(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t ns;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  if (napi_get_value_int64(env, argv[0], &ns) != napi_ok || ns < 1 || ns > INT_MAX) return throw_arg(env, "setTimerSlack takes a whole number of nanoseconds in 1..2^31-1");
  int before = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  if (before < 0) return throw_errno(env, errno, "prctl");
  if (prctl(PR_SET_TIMERSLACK, (unsigned long)ns, 0, 0, 0) != 0) return throw_errno(env, errno, "prctl");
  return make_int(env, before);
}

/* ---- module -------------------------------------------------------------------------------- */

NAPI_MODULE_INIT() {
  static const struct { const char *name; napi_callback fn; } fns[] = {
    { "memfdCreate", js_memfd_create }, { "openNoFollow", js_open_no_follow }, { "openDirectory", js_open_directory }, { "fstat", js_fstat },
    { "peerCredentials", js_peer_credentials },
    { "getSeals", js_get_seals }, { "addSeals", js_add_seals }, { "close", js_close },
    { "mmap", js_mmap }, { "munmap", js_munmap }, { "mappingCount", js_mapping_count },
    { "sendFds", js_send_fds }, { "startReader", js_start_reader }, { "stopReader", js_stop_reader },
    { "setTimerSlack", js_set_timer_slack }, { "getTimerSlack", js_get_timer_slack },
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    NAPI(napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f));
    NAPI(napi_set_named_property(env, exports, fns[i].name, f));
  }
  static const struct { const char *name; int64_t value; } consts[] = {
    { "maxFds", MAX_FDS }, { "readBufferSize", READ_BUFFER },
    { "F_SEAL_SEAL", F_SEAL_SEAL }, { "F_SEAL_SHRINK", F_SEAL_SHRINK }, { "F_SEAL_GROW", F_SEAL_GROW },
    { "F_SEAL_WRITE", F_SEAL_WRITE },
  };
  for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++)
    NAPI(napi_set_named_property(env, exports, consts[i].name, make_int(env, consts[i].value)));
  NAPI(napi_set_named_property(env, exports, "pageSize", make_int(env, sysconf(_SC_PAGESIZE))));
  return exports;
}
