// echo_epoll: the limit for goro's echo benchmark (bench/README.md, "Echo").
// A hand-written C echo over loopback with one edge-triggered epoll event
// loop per thread (--threads, default 2 = the cores), no fibers; each
// connection's two ends (client and server socket) live on the same loop,
// and every read goes until EAGAIN. Client and server are in one process,
// as in `echo_load --serve`. Every echoed byte is checked.
//
//   gcc -O2 -o /tmp/echo_epoll bench/peers/c/echo_epoll.c -lpthread
//   /tmp/echo_epoll --conns=64 --size=64 --duration=5 --threads=2
//
// Prints the same line as tools/echo_load.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { kMaxSize = 65536 };

typedef struct End {
  int fd;
  int client;  // 1: the load side, 0: the echo side
  int conn;
  size_t got;  // client: bytes of the response so far
  uint64_t round;
  int64_t t0;
  unsigned char* req;
  unsigned char* resp;
} End;

typedef struct Loop {
  int epfd;
  int64_t* lat;
  size_t nlat, cap;
  int64_t bad;
  pthread_t thread;
} Loop;

static int g_size = 64;
static atomic_int g_stop, g_counting;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void fill(End* e) {
  for (int k = 0; k < g_size; ++k) {
    e->req[k] = (unsigned char)(e->conn * 31 + e->round * 7 + (uint64_t)k);
  }
}

static void write_all(int fd, const void* p, size_t n) {
  const char* c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w > 0) {
      c += w;
      n -= (size_t)w;
    } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
      perror("write");
      exit(1);
    }
  }
}

static void send_request(End* e) {
  fill(e);
  e->got = 0;
  e->t0 = now_ns();
  write_all(e->fd, e->req, (size_t)g_size);
}

static void on_client(Loop* l, End* e) {
  for (;;) {
    ssize_t n = read(e->fd, e->resp + e->got, (size_t)g_size - e->got);
    if (n < 0) {
      if (errno == EAGAIN) return;
      if (errno == EINTR) continue;
      perror("read");
      exit(1);
    }
    if (n == 0) return;
    e->got += (size_t)n;
    if (e->got < (size_t)g_size) continue;
    int64_t d = now_ns() - e->t0;
    if (memcmp(e->req, e->resp, (size_t)g_size) != 0) ++l->bad;
    if (atomic_load_explicit(&g_counting, memory_order_relaxed)) {
      if (l->nlat == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1 << 16;
        l->lat = realloc(l->lat, l->cap * sizeof(int64_t));
      }
      l->lat[l->nlat++] = d;
    }
    if (atomic_load_explicit(&g_stop, memory_order_relaxed)) return;
    ++e->round;
    send_request(e);
  }
}

static void on_server(End* e) {
  char buf[16384];
  for (;;) {
    ssize_t n = read(e->fd, buf, sizeof(buf));
    if (n > 0) {
      write_all(e->fd, buf, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return;  // EAGAIN, end of stream, error
  }
}

static void* loop_main(void* arg) {
  Loop* l = arg;
  struct epoll_event evs[256];
  while (!atomic_load(&g_stop)) {
    int n = epoll_wait(l->epfd, evs, 256, 100);
    for (int i = 0; i < n; ++i) {
      End* e = evs[i].data.ptr;
      if (e->client) {
        on_client(l, e);
      } else {
        on_server(e);
      }
    }
  }
  return NULL;
}

static int cmp64(const void* a, const void* b) {
  int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
  return x < y ? -1 : x > y;
}

static double q_us(int64_t* v, size_t n, double q) {
  if (n == 0) return 0;
  size_t i = (size_t)(q * (double)n);
  if (i >= n) i = n - 1;
  return (double)v[i] / 1000.0;
}

static int arg(int argc, char** argv, const char* name, int def) {
  size_t len = strlen(name);
  for (int i = 1; i < argc; ++i) {
    if (strncmp(argv[i], name, len) == 0 && argv[i][len] == '=') {
      return atoi(argv[i] + len + 1);
    }
  }
  return def;
}

int main(int argc, char** argv) {
  const int conns = arg(argc, argv, "--conns", 64);
  const int threads = arg(argc, argv, "--threads", 2);
  const int duration = arg(argc, argv, "--duration", 5);
  g_size = arg(argc, argv, "--size", 64);
  if (conns < 1 || conns > 20000 || threads < 1 || threads > 64 ||
      g_size < 1 || g_size > kMaxSize || duration < 1 || duration > 120) {
    fprintf(stderr, "echo_epoll: bad arguments\n");
    return 2;
  }
  int ln = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {0};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t slen = sizeof(sin);
  if (bind(ln, (struct sockaddr*)&sin, sizeof(sin)) != 0 ||
      listen(ln, 4096) != 0 ||
      getsockname(ln, (struct sockaddr*)&sin, &slen) != 0) {
    perror("listen");
    return 1;
  }
  Loop* loops = calloc((size_t)threads, sizeof(Loop));
  for (int t = 0; t < threads; ++t) loops[t].epfd = epoll_create1(EPOLL_CLOEXEC);
  End* ends = calloc((size_t)conns * 2, sizeof(End));
  const int one = 1;
  for (int i = 0; i < conns; ++i) {
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(c, (struct sockaddr*)&sin, sizeof(sin)) != 0) {
      perror("connect");
      return 1;
    }
    int s = accept4(ln, NULL, NULL, SOCK_CLOEXEC);
    if (s < 0) {
      perror("accept");
      return 1;
    }
    Loop* l = &loops[i % threads];
    int fds[2] = {c, s};
    for (int k = 0; k < 2; ++k) {
      End* e = &ends[2 * i + k];
      e->fd = fds[k];
      e->client = k == 0;
      e->conn = i;
      if (e->client) {
        e->req = malloc((size_t)g_size);
        e->resp = malloc((size_t)g_size);
      }
      fcntl(e->fd, F_SETFL, fcntl(e->fd, F_GETFL) | O_NONBLOCK);
      setsockopt(e->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET,
                               .data.ptr = e};
      epoll_ctl(l->epfd, EPOLL_CTL_ADD, e->fd, &ev);
    }
  }
  for (int i = 0; i < conns; ++i) send_request(&ends[2 * i]);
  for (int t = 0; t < threads; ++t) {
    pthread_create(&loops[t].thread, NULL, loop_main, &loops[t]);
  }
  usleep(500000);  // warm-up, as echo_load
  atomic_store(&g_counting, 1);
  const int64_t start = now_ns();
  sleep((unsigned)duration);
  atomic_store(&g_stop, 1);
  const double secs = (double)(now_ns() - start) / 1e9;
  size_t total = 0;
  int64_t bad = 0;
  for (int t = 0; t < threads; ++t) {
    pthread_join(loops[t].thread, NULL);
    total += loops[t].nlat;
    bad += loops[t].bad;
  }
  int64_t* all = malloc((total + 1) * sizeof(int64_t));
  size_t k = 0;
  for (int t = 0; t < threads; ++t) {
    memcpy(all + k, loops[t].lat, loops[t].nlat * sizeof(int64_t));
    k += loops[t].nlat;
  }
  qsort(all, total, sizeof(int64_t), cmp64);
  printf(
      "echo_epoll: conns=%d size=%d threads=%d round_trips=%zu rt_per_s=%.0f "
      "p50_us=%.1f p99_us=%.1f p999_us=%.1f bad=%lld errors=0\n",
      conns, g_size, threads, total, (double)total / secs,
      q_us(all, total, 0.5), q_us(all, total, 0.99), q_us(all, total, 0.999),
      (long long)bad);
  return bad != 0;
}
