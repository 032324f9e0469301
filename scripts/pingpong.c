/*
 * C ping-pong over a Unix stream socket between two processes: the machine's floor for the
 * protocol benchmark (src/app/bench/protocol.ts). The parent sends `req` bytes, the child answers
 * with `rep` bytes, `iters` times after a warm-up; the parent prints the round-trip p50 and p99
 * in nanoseconds: "p50_ns p99_ns".
 *
 *   gcc -O2 -o pingpong scripts/pingpong.c && ./pingpong 20000 20 28
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>

/* Moves exactly n bytes in one direction (read when buf is writable, write otherwise). */
static int move_full(int fd, char *rbuf, const char *wbuf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = rbuf ? read(fd, rbuf + done, n - done) : write(fd, wbuf + done, n - done);
    if (r <= 0) return -1;
    done += (size_t)r;
  }
  return 0;
}

static int read_full(int fd, char *buf, size_t n) { return move_full(fd, buf, NULL, n); }
static int write_full(int fd, const char *buf, size_t n) { return move_full(fd, NULL, buf, n); }

static int cmp(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 20000;
  size_t req = argc > 2 ? (size_t)atoi(argv[2]) : 20;
  size_t rep = argc > 3 ? (size_t)atoi(argv[3]) : 28;
  int warm = iters / 10 + 100;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) { perror("socketpair"); return 1; }
  char *buf = calloc(1, req > rep ? req : rep);
  pid_t pid = fork();
  if (pid == 0) {
    close(sv[0]);
    for (;;) {
      if (read_full(sv[1], buf, req) != 0) _exit(0);
      if (write_full(sv[1], buf, rep) != 0) _exit(0);
    }
  }
  close(sv[1]);
  long long *ns = malloc(sizeof(long long) * (size_t)iters);
  for (int i = 0; i < warm + iters; i++) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (write_full(sv[0], buf, req) != 0 || read_full(sv[0], buf, rep) != 0) { perror("io"); return 1; }
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (i >= warm) ns[i - warm] = (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
  }
  close(sv[0]);
  waitpid(pid, NULL, 0);
  qsort(ns, (size_t)iters, sizeof(long long), cmp);
  int i50 = (int)(0.50 * iters + 0.5) - 1, i99 = (int)(0.99 * iters + 0.5) - 1;
  if (i50 < 0) i50 = 0;
  if (i99 < 0) i99 = 0;
  printf("%lld %lld\n", ns[i50], ns[i99]);
  return 0;
}
