/*
 * btvm-bench: the guest workloads of the Linux guest image, one static
 * program with a subcommand per workload (scripts/build-guest-image.sh puts
 * it in the initramfs as /bin/btvm-bench). Each prints what it did and how
 * long it took by the guest's clock:
 *
 *   btvm-bench spin N        N rounds of an xorshift64 step and a rotate chain
 *                            (registers only)
 *   btvm-bench compute N     N rounds of an integer hash over a 16 KiB table
 *   btvm-bench syscall N     N getppid() round trips
 *   btvm-bench pagefault N   N first touches of fresh anonymous pages
 *   btvm-bench forkwait N    N fork() + waitpid() of a child that exits at once
 *   btvm-bench forkexec N    N fork() + execve("/bin/true") + waitpid()
 *   btvm-bench pingpong N    N round trips of a byte between two processes
 *                            over two pipes (two context switches each)
 *   btvm-bench fsmix N       N rounds of file-system work in memory: 16
 *                            files created, written, listed, stat-ed,
 *                            renamed, read back and removed (a kernel-heavy
 *                            mix; in the guest's initramfs, natively under
 *                            /dev/shm)
 *
 * The same source runs natively on the host for the comparison columns.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

/* The registers-only loop (bench/loops/loop_reg.c's). */
static uint64_t spin(long n) {
  uint64_t x = 0x9e3779b97f4a7c15ull;
  uint64_t y = 0x6a09e667f3bcc909ull;
  for (uint64_t i = 0; i < (uint64_t)n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    y = rotl(y + x, 23) ^ i;
  }
  return x ^ y;
}

static uint64_t compute(long n) {
  static uint32_t table[4096];
  uint32_t x = 2463534242u;
  for (int i = 0; i < 4096; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    table[i] = x;
  }
  uint64_t h = 0xcbf29ce484222325ull;
  for (long r = 0; r < n; r++) {
    for (int i = 0; i < 4096; i++) {
      h ^= table[(i * 7 + (int)(h & 0xff)) & 4095];
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

static uint64_t syscalls(long n) {
  uint64_t sum = 0;
  for (long i = 0; i < n; i++) sum += (uint64_t)syscall(SYS_getppid);
  return sum;
}

static uint64_t pagefaults(long n) {
  const size_t page = 4096;
  uint8_t* p = mmap(NULL, (size_t)n * page, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("btvm-bench: mmap");
    exit(1);
  }
  for (long i = 0; i < n; i++) p[(size_t)i * page] = (uint8_t)i;
  uint64_t sum = 0;
  for (long i = 0; i < n; i++) sum += p[(size_t)i * page];
  munmap(p, (size_t)n * page);
  return sum;
}

static uint64_t forks(long n, int exec) {
  uint64_t ok = 0;
  for (long i = 0; i < n; i++) {
    pid_t pid = fork();
    if (pid < 0) {
      perror("btvm-bench: fork");
      exit(1);
    }
    if (pid == 0) {
      if (exec) {
        char* argv[] = {"true", NULL};
        execv("/bin/true", argv);
        _exit(127);
      }
      _exit(0);
    }
    int status;
    if (waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0) ok++;
  }
  return ok;
}

static void must(int ok, const char* what) {
  if (!ok) {
    perror(what);
    exit(1);
  }
}

/* The parent sends a byte down one pipe, the child answers with another
   byte up the other; the result sums what came back. Both processes stay on
   the CPU the parent started on (natively too: a one-CPU guest switches
   between them, a host with more CPUs would otherwise wake the other one on
   another CPU). */
static uint64_t pingpong(long n) {
  int down[2], up[2];
  must(pipe(down) == 0 && pipe(up) == 0, "btvm-bench: pipe");
  int cpu = sched_getcpu();
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
  }
  pid_t pid = fork();
  must(pid >= 0, "btvm-bench: fork");
  if (pid == 0) {
    close(down[1]);
    close(up[0]);
    unsigned char c;
    while (read(down[0], &c, 1) == 1) {
      c = (unsigned char)(c * 5 + 1);
      if (write(up[1], &c, 1) != 1) _exit(1);
    }
    _exit(0);
  }
  close(down[0]);
  close(up[1]);
  uint64_t sum = 0;
  for (long i = 0; i < n; i++) {
    unsigned char c = (unsigned char)i;
    must(write(down[1], &c, 1) == 1, "btvm-bench: write");
    must(read(up[0], &c, 1) == 1, "btvm-bench: read");
    sum += c;
  }
  close(down[1]);
  close(up[0]);
  int status;
  must(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "btvm-bench: the pingpong child");
  return sum;
}

/* The result sums the sizes stat() saw and the bytes read back, so a
   round that lost a file or a write shows. */
static uint64_t fsmix(long n) {
  enum { kFiles = 16 };
  char dir[] = "/dev/shm/btvm-bench-XXXXXX";
  char* made = mkdtemp(dir);
  if (!made) made = mkdtemp(strcpy(dir, "/tmp/btvm-bench-XXXXXX"));
  must(made != NULL, "btvm-bench: mkdtemp");
  char block[512];
  for (int i = 0; i < (int)sizeof block; i++) block[i] = (char)(i * 7);
  uint64_t sum = 0;
  char path[320], path2[320];
  for (long r = 0; r < n; r++) {
    for (int f = 0; f < kFiles; f++) {
      snprintf(path, sizeof path, "%s/f%02d", dir, f);
      int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
      must(fd >= 0, "btvm-bench: open");
      must(write(fd, block, (size_t)(64 + f * 28)) == 64 + f * 28, "btvm-bench: write");
      close(fd);
    }
    DIR* d = opendir(dir);
    must(d != NULL, "btvm-bench: opendir");
    for (struct dirent* e; (e = readdir(d)) != NULL;) {
      if (e->d_name[0] == '.') continue;
      struct stat st;
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      must(stat(path, &st) == 0, "btvm-bench: stat");
      sum += (uint64_t)st.st_size;
    }
    closedir(d);
    for (int f = 0; f < kFiles; f += 2) {
      snprintf(path, sizeof path, "%s/f%02d", dir, f);
      snprintf(path2, sizeof path2, "%s/g%02d", dir, f);
      must(rename(path, path2) == 0, "btvm-bench: rename");
    }
    for (int f = 0; f < kFiles; f++) {
      snprintf(path, sizeof path, "%s/%c%02d", dir, f % 2 ? 'f' : 'g', f);
      int fd = open(path, O_RDONLY);
      must(fd >= 0, "btvm-bench: open to read");
      char back[sizeof block];
      ssize_t got = read(fd, back, sizeof back);
      must(got == 64 + f * 28, "btvm-bench: read");
      sum += (uint64_t)(unsigned char)back[got - 1];
      close(fd);
      must(unlink(path) == 0, "btvm-bench: unlink");
    }
  }
  must(rmdir(dir) == 0, "btvm-bench: rmdir");
  return sum;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr,
            "usage: btvm-bench spin|compute|syscall|pagefault|forkwait|forkexec|pingpong|fsmix N\n");
    return 2;
  }
  const char* what = argv[1];
  long n = strtol(argv[2], NULL, 0);
  if (n <= 0) {
    fprintf(stderr, "btvm-bench: N must be a positive number\n");
    return 2;
  }
  uint64_t t0 = now_ns(), result;
  if (strcmp(what, "spin") == 0) {
    result = spin(n);
  } else if (strcmp(what, "compute") == 0) {
    result = compute(n);
  } else if (strcmp(what, "syscall") == 0) {
    result = syscalls(n);
  } else if (strcmp(what, "pagefault") == 0) {
    result = pagefaults(n);
  } else if (strcmp(what, "forkwait") == 0) {
    result = forks(n, 0);
  } else if (strcmp(what, "forkexec") == 0) {
    result = forks(n, 1);
  } else if (strcmp(what, "pingpong") == 0) {
    result = pingpong(n);
  } else if (strcmp(what, "fsmix") == 0) {
    result = fsmix(n);
  } else {
    fprintf(stderr, "btvm-bench: unknown workload %s\n", what);
    return 2;
  }
  uint64_t ns = now_ns() - t0;
  printf("btvm-bench %s %ld: result 0x%llx, %llu ns, %llu ns each\n", what, n,
         (unsigned long long)result, (unsigned long long)ns, (unsigned long long)(ns / (uint64_t)n));
  return 0;
}
