// dsys-exec: the two small steps around bubblewrap that no packaged tool does for us.
//
//   dsys-exec enter CGROUP_PROCS_FILE... -- COMMAND [ARG...]
//     On the host, as root: moves itself into each cgroup (writes "0" to each cgroup.procs file),
//     then execs COMMAND (bwrap). Done before the exec so that nothing the chunk ever starts,
//     bwrap included, runs outside the chunk's cgroups even for an instant: a process moved in
//     after it started could already have forked children that stay outside.
//
//   dsys-exec run --uid U --gid G [--cpu-secs N] [--nofile N] --status-fd FD -- PROGRAM [ARG...]
//     Inside the sandbox, started by bwrap as uid 0 holding only CAP_SETUID and CAP_SETGID: forks;
//     the child drops to U:G with no supplementary groups (which clears every capability), sets
//     no_new_privs and its rlimits, and execs PROGRAM; the parent (still uid 0, so a program of
//     uid U can neither signal nor trace it) waits for it and writes its exact end to FD as one
//     line: "exit N", "signal N" or "exec-error ERRNO". bwrap itself only reports 128+N for a
//     signal, which cannot be told apart from a program that exits with that code.
//
// Exit status of dsys-exec: 125 for its own errors (message on stderr), else the program's exit
// code (128+N for a signal), which the worker only uses when no status line was written.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
          "PROGRAM [ARG...]\n");
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

static void write_status(int fd, const char *kind, long value) {
  char line[64];
  int n = snprintf(line, sizeof(line), "%s %ld\n", kind, value);
  if (fd >= 0 && n > 0 && write(fd, line, (size_t)n) < 0) { /* the worker then uses our exit code */
  }
}

static int run(int argc, char **argv) {
  long long uid = -1, gid = -1, cpu = -1, nofile = -1, status_fd = -1;
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
  char **prog = argv + i + 1;
  int sfd = (int)status_fd;
  if (fcntl(sfd, F_SETFD, FD_CLOEXEC) != 0) return fail("status fd");
  /* The child reports a failed exec through this pipe (closed by a successful exec). */
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return fail("pipe");
  pid_t pid = fork();
  if (pid < 0) return fail("fork");
  if (pid == 0) {
    close(p[0]);
    int err = 0;
    if (setgroups(0, NULL) != 0 || setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) != 0 ||
        setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0)
      err = errno ? errno : EPERM;
    /* Belt and braces: uid 0 must be out of reach for good. */
    if (!err && (setuid(0) == 0 || getuid() != (uid_t)uid || geteuid() != (uid_t)uid)) err = EPERM;
    if (!err && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) err = errno;
    /* A core dump is a write the quota did not plan for, and a piped core_pattern runs a host
     * helper on the program's behalf. */
    struct rlimit core = {0, 0};
    if (!err && setrlimit(RLIMIT_CORE, &core) != 0) err = errno;
    if (!err && cpu > 0) {
      /* SIGXCPU at the limit, SIGKILL one second later if the program catches it. */
      struct rlimit r = {(rlim_t)cpu, (rlim_t)cpu + 1};
      if (setrlimit(RLIMIT_CPU, &r) != 0) err = errno;
    }
    if (!err && nofile > 0) {
      struct rlimit r = {(rlim_t)nofile, (rlim_t)nofile};
      if (setrlimit(RLIMIT_NOFILE, &r) != 0) err = errno;
    }
    if (!err) {
      /* A shell-like start: default dispositions and an empty mask. */
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, NULL);
      for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
      execv(prog[0], prog);
      err = errno;
    }
    if (write(p[1], &err, sizeof(err)) < 0) { /* the parent then sees EOF: reports exit 127 */
    }
    _exit(127);
  }
  close(p[1]);
  /* Our own death must not leave the program running unreported: bwrap's init kills the whole
   * PID namespace when we (its only child) exit, so just wait. Signals aimed at the session are
   * the program's business: ignore them here. */
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  int exec_err = 0;
  ssize_t n;
  do n = read(p[0], &exec_err, sizeof(exec_err));
  while (n < 0 && errno == EINTR);
  close(p[0]);
  int st;
  pid_t r;
  do r = waitpid(pid, &st, 0);
  while (r < 0 && errno == EINTR);
  if (r < 0) return fail("waitpid");
  if (n == (ssize_t)sizeof(exec_err) && exec_err != 0) {
    write_status(sfd, "exec-error", exec_err);
    return 127;
  }
  if (WIFSIGNALED(st)) {
    write_status(sfd, "signal", WTERMSIG(st));
    return 128 + WTERMSIG(st);
  }
  write_status(sfd, "exit", WEXITSTATUS(st));
  return WEXITSTATUS(st);
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "enter") == 0) return enter(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "run") == 0) return run(argc, argv);
  return usage();
}
