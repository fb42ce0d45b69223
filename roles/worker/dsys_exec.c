// dsys-exec: the small steps around bubblewrap that no packaged tool does for us.
//
//   dsys-exec enter CGROUP_PROCS_FILE... -- COMMAND [ARG...]
//     On the host, as root: moves itself into each cgroup (writes "0" to each cgroup.procs file),
//     then execs COMMAND (bwrap). Done before the exec so that nothing the chunk ever starts,
//     bwrap included, runs outside the chunk's cgroups even for an instant: a process moved in
//     after it started could already have forked children that stay outside.
//
//   dsys-exec run --uid U --gid G [--cpu-secs N] [--nofile N] --status-fd FD -- PROGRAM [ARG...]
//     Inside a one-chunk sandbox, started by bwrap as uid 0 holding only CAP_SETUID and
//     CAP_SETGID: forks; the child drops to U:G with no supplementary groups (which clears every
//     capability), sets no_new_privs and its rlimits, and execs PROGRAM; the parent (still uid 0,
//     so a program of uid U can neither signal nor trace it) waits for it and writes its exact end
//     to FD as one line: "exit N", "signal N" or "exec-error ERRNO". bwrap itself only reports
//     128+N for a signal, which cannot be told apart from a program that exits with that code.
//
//   dsys-exec slot --uid U --req-fd R --rep-fd W
//     A slot's warm sandbox (roles/worker/warm_slot.ts): started once per slot by bwrap with the
//     slot's network, IPC, UTS and mount namespaces, as uid 0 with CAP_SYS_ADMIN, CAP_SETUID and
//     CAP_SETGID. Reads chunk requests from R; for each, a child C unshares a new PID, mount and
//     IPC namespace and forks their init G, which mounts that PID namespace's /proc and the
//     chunk's /dev/shm, then runs the program as `run` does; G writes "SEQ exit N" (or signal,
//     exec-error) to W when the program ends and exits, which ends every process of the chunk
//     (the kernel kills a PID namespace with its init); C then writes "SEQ end". At start the
//     slot writes "ready PID". A chunk never sees R, W, the slot's processes or another chunk.
//
// Exit status of dsys-exec: 125 for its own errors (message on stderr), else the program's exit
// code (128+N for a signal), which the worker only uses when no status line was written.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int fail(const char *what) {
  fprintf(stderr, "dsys-exec: %s: %s\n", what, strerror(errno));
  return 125;
}

static int usage(void) {
  fprintf(stderr,
          "usage: dsys-exec enter CGROUP_PROCS... -- COMMAND [ARG...]\n"
          "       dsys-exec run --uid U --gid G [--cpu-secs N] [--nofile N] --status-fd FD -- "
          "PROGRAM [ARG...]\n"
          "       dsys-exec slot --uid U --req-fd R --rep-fd W\n");
  return 125;
}

/* Parses a decimal in 0..UINT_MAX (uids, gids, fds, seconds); -1 when it is not one. */
static long long number(const char *s) {
  if (!s || s[0] < '0' || s[0] > '9') return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v > UINT_MAX) return -1;
  return (long long)v;
}

static int enter(int argc, char **argv) {
  int i = 2;
  for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
    int fd = open(argv[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0) return fail(argv[i]);
    if (write(fd, "0", 1) != 1) {
      int e = errno;
      close(fd);
      errno = e;
      return fail(argv[i]);
    }
    close(fd);
  }
  if (i + 1 >= argc) return usage();
  execv(argv[i + 1], argv + i + 1);
  return fail(argv[i + 1]);
}

/* What the program may use, and as whom it runs. */
struct limits {
  uid_t uid;
  gid_t gid;
  long long cpu_secs; /* RLIMIT_CPU, 0 = none */
  long long nofile;   /* RLIMIT_NOFILE, 0 = inherited */
};

/* In a forked child: drops every privilege for good, sets the rlimits, execs. On failure writes
 * the errno to errfd (a close-on-exec pipe, so a successful exec closes it) and exits 127. */
static void drop_and_exec(const struct limits *l, char **argv, char **envp, int errfd) {
  int err = 0;
  if (setgroups(0, NULL) != 0 || setresgid(l->gid, l->gid, l->gid) != 0 ||
      setresuid(l->uid, l->uid, l->uid) != 0)
    err = errno ? errno : EPERM;
  /* Belt and braces: uid 0 must be out of reach for good. */
  if (!err && (setuid(0) == 0 || getuid() != l->uid || geteuid() != l->uid)) err = EPERM;
  if (!err && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) err = errno;
  /* A core dump is a write the quota did not plan for, and a piped core_pattern runs a host
   * helper on the program's behalf. */
  struct rlimit core = {0, 0};
  if (!err && setrlimit(RLIMIT_CORE, &core) != 0) err = errno;
  if (!err && l->cpu_secs > 0) {
    /* SIGXCPU at the limit, SIGKILL one second later if the program catches it. */
    struct rlimit r = {(rlim_t)l->cpu_secs, (rlim_t)l->cpu_secs + 1};
    if (setrlimit(RLIMIT_CPU, &r) != 0) err = errno;
  }
  if (!err && l->nofile > 0) {
    struct rlimit r = {(rlim_t)l->nofile, (rlim_t)l->nofile};
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) err = errno;
  }
  if (!err) {
    /* A shell-like start: default dispositions and an empty mask. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    if (envp) execve(argv[0], argv, envp);
    else execv(argv[0], argv);
    err = errno;
  }
  if (write(errfd, &err, sizeof(err)) < 0) { /* the parent then sees EOF: reports exit 127 */
  }
  _exit(127);
}

/* Waits for the program `pid` (reaping any other child meanwhile: as a PID namespace's init
 * orphans come to us) and formats how it ended into `line`. */
static void supervise(pid_t pid, int errfd, char *line, size_t cap, const char *prefix) {
  int exec_err = 0;
  ssize_t n;
  do n = read(errfd, &exec_err, sizeof(exec_err));
  while (n < 0 && errno == EINTR);
  close(errfd);
  int st = 0;
  for (;;) {
    pid_t r = wait(&st);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      st = -1;
      break;
    }
  }
  if (n == (ssize_t)sizeof(exec_err) && exec_err != 0)
    snprintf(line, cap, "%sexec-error %d\n", prefix, exec_err);
  else if (st == -1) snprintf(line, cap, "%sexec-error %d\n", prefix, ECHILD);
  else if (WIFSIGNALED(st)) snprintf(line, cap, "%ssignal %d\n", prefix, WTERMSIG(st));
  else snprintf(line, cap, "%sexit %d\n", prefix, WEXITSTATUS(st));
}

static void write_all(int fd, const char *s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return; /* the worker then knows nothing more of it: it finds out by other means */
    s += w;
    n -= (size_t)w;
  }
}

/* Exit code for a status line: the program's own, or 128+N for a signal. */
static int code_of(const char *line) {
  const char *sp = strrchr(line, ' ');
  int v = sp ? atoi(sp + 1) : 125;
  if (strstr(line, "signal ")) return 128 + v;
  if (strstr(line, "exec-error ")) return 127;
  return v;
}

static int run(int argc, char **argv) {
  long long uid = -1, gid = -1, cpu = 0, nofile = 0, status_fd = -1;
  int i = 2;
  for (; i + 1 < argc && strcmp(argv[i], "--") != 0; i += 2) {
    long long v = number(argv[i + 1]);
    if (v < 0) return usage();
    if (strcmp(argv[i], "--uid") == 0) uid = v;
    else if (strcmp(argv[i], "--gid") == 0) gid = v;
    else if (strcmp(argv[i], "--cpu-secs") == 0) cpu = v;
    else if (strcmp(argv[i], "--nofile") == 0) nofile = v;
    else if (strcmp(argv[i], "--status-fd") == 0) status_fd = v;
    else return usage();
  }
  /* uid/gid 0 would leave the program root: never. */
  if (uid <= 0 || gid <= 0 || status_fd < 3 || i + 1 >= argc || strcmp(argv[i], "--") != 0)
    return usage();
  int sfd = (int)status_fd;
  if (fcntl(sfd, F_SETFD, FD_CLOEXEC) != 0) return fail("status fd");
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return fail("pipe");
  struct limits l = {(uid_t)uid, (gid_t)gid, cpu, nofile};
  pid_t pid = fork();
  if (pid < 0) return fail("fork");
  if (pid == 0) {
    close(p[0]);
    drop_and_exec(&l, argv + i + 1, NULL, p[1]);
  }
  close(p[1]);
  /* Our own death must not leave the program running unreported: bwrap's init kills the whole
   * PID namespace when we (its only child) exit, so just wait. Signals aimed at the session are
   * the program's business: ignore them here. */
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  char line[96];
  supervise(pid, p[0], line, sizeof(line), "");
  write_all(sfd, line);
  return code_of(line);
}

/* ---------- slot mode ---------- */

/* Reads exactly n bytes; 0 on success, -1 on EOF or error. */
static int read_full(int fd, char *buf, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, buf, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    buf += r;
    n -= (size_t)r;
  }
  return 0;
}

/* Splits `n` NUL-terminated strings off *p (bounded by end) into a NULL-terminated array. */
static char **take_strings(char **p, char *end, long long n) {
  if (n < 0 || n > 1 << 20) return NULL;
  char **out = calloc((size_t)n + 1, sizeof(char *));
  for (long long i = 0; i < n; i++) {
    char *z = memchr(*p, 0, (size_t)(end - *p));
    if (!z) {
      free(out);
      return NULL;
    }
    out[i] = *p;
    *p = z + 1;
  }
  return out;
}

/* The chunk's PID namespace init: its own /proc and /dev/shm, its stdout and stderr, then the
 * program as in `run`. Writes "SEQ <end>" to rep and exits: the kernel then ends every process
 * left in the namespace. */
static void chunk_init(const struct limits *l, const char *seq, char **argv, char **envp,
                       int rep) {
  char pre[64];
  snprintf(pre, sizeof(pre), "%s ", seq);
  char line[128];
  /* The chunk's mounts are its own (the slot's stay as they were for the next chunk). */
  if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) != 0 ||
      mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0 ||
      mount("/dsys/view/fs/shm", "/dev/shm", NULL, MS_BIND, NULL) != 0) {
    snprintf(line, sizeof(line), "%sexec-error %d\n", pre, errno);
    write_all(rep, line);
    _exit(125);
  }
  int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int out = open("/dsys/view/fs/stdout", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int err = open("/dsys/view/fs/stderr", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int p[2];
  if (in < 0 || out < 0 || err < 0 || pipe2(p, O_CLOEXEC) != 0) {
    snprintf(line, sizeof(line), "%sexec-error %d\n", pre, errno);
    write_all(rep, line);
    _exit(125);
  }
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    close(rep);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0 || chdir("/tmp") != 0) {
      int e = errno;
      if (write(p[1], &e, sizeof(e)) < 0) { /* reported as exit 127 */
      }
      _exit(127);
    }
    drop_and_exec(l, argv, envp, p[1]);
  }
  close(p[1]);
  close(in);
  close(out);
  close(err);
  if (pid < 0) snprintf(line, sizeof(line), "%sexec-error %d\n", pre, errno);
  else supervise(pid, p[0], line, sizeof(line), pre);
  write_all(rep, line);
  _exit(0);
}

/* One request: "<payload bytes>\n" then the payload, NUL-separated fields:
 * SEQ, CPU_SECS, ARGC, ARGV..., ENVC, ENV... */
static int slot(int argc, char **argv) {
  long long uid = -1, req = -1, rep = -1;
  for (int i = 2; i + 1 < argc; i += 2) {
    long long v = number(argv[i + 1]);
    if (v < 0) return usage();
    if (strcmp(argv[i], "--uid") == 0) uid = v;
    else if (strcmp(argv[i], "--req-fd") == 0) req = v;
    else if (strcmp(argv[i], "--rep-fd") == 0) rep = v;
    else return usage();
  }
  if (uid <= 0 || req < 3 || rep < 3) return usage();
  int R = (int)req, W = (int)rep;
  if (fcntl(R, F_SETFD, FD_CLOEXEC) != 0 || fcntl(W, F_SETFD, FD_CLOEXEC) != 0)
    return fail("fds");
  /* Children (the chunks' C processes) are reaped by the kernel; their ends come as lines. */
  signal(SIGCHLD, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  char hello[48];
  snprintf(hello, sizeof(hello), "ready %d\n", (int)getpid());
  write_all(W, hello);
  for (;;) {
    char head[24];
    size_t h = 0;
    for (;;) {
      if (h + 1 >= sizeof(head) || read_full(R, head + h, 1) != 0) return 0; /* worker gone */
      if (head[h] == '\n') break;
      h++;
    }
    head[h] = 0;
    long long len = number(head);
    if (len <= 0 || len > 64 << 20) return fail("request length");
    char *buf = malloc((size_t)len);
    if (!buf || read_full(R, buf, (size_t)len) != 0) return 0;
    char *p = buf, *end = buf + len;
    char **fixed = take_strings(&p, end, 3);
    long long cpu = fixed ? number(fixed[1]) : -1, n = fixed ? number(fixed[2]) : -1;
    char **args = n > 0 ? take_strings(&p, end, n) : NULL;
    char **envn = args ? take_strings(&p, end, 1) : NULL;
    char **envp = envn ? take_strings(&p, end, number(envn[0])) : NULL;
    if (!envp || cpu < 0) {
      char line[96];
      snprintf(line, sizeof(line), "%s exec-error %d\n", fixed ? fixed[0] : "0", EINVAL);
      write_all(W, line);
      free(buf);
      continue;
    }
    struct limits l = {(uid_t)uid, (gid_t)uid, cpu, 0};
    pid_t c = fork();
    char started[96];
    if (c < 0) snprintf(started, sizeof(started), "%s exec-error %d\n%s end\n", fixed[0], errno,
                        fixed[0]);
    else snprintf(started, sizeof(started), "%s started %d\n", fixed[0], (int)c);
    /* C's pid, so the worker can tell when it is gone even if it is killed before it could say
     * "end" (lines of one chunk may arrive in any order). */
    if (c != 0) write_all(W, started);
    if (c == 0) {
      /* Gone with the slot: C, and its namespace's init below, never outlive dsys-exec. */
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      signal(SIGCHLD, SIG_DFL);
      close(R);
      if (unshare(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC) != 0) {
        char line[96];
        snprintf(line, sizeof(line), "%s exec-error %d\n", fixed[0], errno);
        write_all(W, line);
        _exit(125);
      }
      pid_t g = fork();
      if (g == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        chunk_init(&l, fixed[0], args, envp, W);
      }
      int st;
      while (g > 0 && waitpid(g, &st, 0) < 0 && errno == EINTR) {
      }
      char line[64];
      snprintf(line, sizeof(line), "%s end\n", fixed[0]);
      write_all(W, line);
      _exit(0);
    }
    free(fixed);
    free(args);
    free(envn);
    free(envp);
    free(buf);
  }
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "enter") == 0) return enter(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "run") == 0) return run(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "slot") == 0) return slot(argc, argv);
  return usage();
}
