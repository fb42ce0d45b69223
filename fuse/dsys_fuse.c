// dsys_fuse: the worker's read-only FUSE mount of job input files (libfuse3 low-level API).
//
// Why C: the metadata ops and the read fast path (pread from a local cache file) run entirely in
// libfuse's own threads, so reading through the mount never waits for the JS event loop. JS is only
// involved when a file's bytes are not cached yet: the reading FUSE thread enqueues a fetch request
// and sleeps on a condition variable; JS picks requests up with dsys_fuse_next_request (called as a
// nonblocking FFI call, so it blocks a Deno pool thread, not the event loop), downloads the bytes into
// the cache file and calls dsys_fuse_complete, which wakes every reader waiting for that file id.
//
// Cache files are named by the lowercase hex of the 16-byte file id inside cache_dir. They are
// immutable; eviction (LRU, decided by TypeScript) goes through dsys_fuse_evict, which refuses while
// a file is open through the mount, pinned, or being fetched, so an open file never loses its bytes.
//
// Access: the worker's chunks run as per-slot uids (roles/worker/sandbox.ts). A top-level directory
// (a job's, `<job-id>/`) is served only to root and to the uids TypeScript allowed for it
// (dsys_fuse_allow, counted per uid: one per running chunk of that job), checked on every lookup,
// getattr, opendir and open with the caller's uid (fuse_req_ctx), so a process of another uid,
// in a sandbox or not, can neither open another job's inputs nor list their names; listing the
// mount's root shows a uid only the directories it is allowed. Reads need an open file, so they
// are not checked again.
//
// Cache integrity: a cache file is used only when it is known to hold its id's bytes: verified
// (SHA-256 by TypeScript) when it entered the cache or on its first use by this process, and
// unchanged since (same inode, size, mtime and ctime as then). Anything else is handed to the
// fetch callback again, which re-verifies or re-fetches it, so a file changed on disk is never
// served (detected when the file is next opened with no open handle left).
//
// Locking: one mutex per mount guards every table; it is never held across blocking I/O except
// open()/fstat() of a local cache file.

#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

/* FUSE passthrough (kernel >= 6.9, newer than libfuse 3.14's headers): an open file whose bytes are
 * cached is handed to the kernel with the cache file as backing file, so reads never come to user
 * space. libfuse 3.14 cannot negotiate it, so the INIT and OPEN replies are patched on their way
 * out through a custom writev (fuse_session_custom_io). */
#define DSYS_FUSE_INIT_EXT (1u << 30)
#define DSYS_FUSE_PASSTHROUGH_FLAGS2 (1u << 5) /* FUSE_PASSTHROUGH = 1ULL << 37 */
#define DSYS_FOPEN_KEEP_CACHE (1u << 1)
#define DSYS_FOPEN_PASSTHROUGH (1u << 7)
struct dsys_backing_map {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
#define DSYS_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct dsys_backing_map)
#define DSYS_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

#define ID_LEN 16
#define TTL 86400.0 /* names and attributes never change while a node exists */

typedef struct centry {
  uint8_t id[ID_LEN];
  int fetching;      /* a fetch request is queued or in flight in JS */
  int fd;            /* cache file fd while opens > 0 and first read happened, else -1 */
  uint32_t opens;    /* open file handles (kernel side) referencing this id: an implicit pin */
  uint32_t pins;     /* explicit pins from TypeScript */
  uint64_t gen;      /* bumped on every completed fetch attempt (wakes waiters) */
  int last_err;      /* errno of the last completed attempt, 0 = success */
  uint64_t last_use; /* value of the mount's use clock at the last open/read */
  int backing_id;    /* kernel passthrough backing id while pt_opens > 0, else 0 */
  uint32_t pt_opens; /* opens served by passthrough */
  /* The cache file as it was when its bytes were last verified against the id (0: never). */
  int verified;
  dev_t v_dev;
  ino_t v_ino;
  off_t v_size;
  struct timespec v_mtime, v_ctime;
  struct centry *next;
} centry;

typedef struct acl_entry {
  uint32_t uid;
  uint32_t count;
} acl_entry;

typedef struct node {
  uint64_t ino;
  struct node *parent; /* NULL once removed */
  char *name;
  int is_dir;
  uint64_t size;
  centry *ce;
  struct node *first_child, *next_sib, *prev_sib;
  uint32_t nchildren;
  uint64_t nlookup; /* kernel lookup count: a removed node is freed when it drops to 0 */
  /* Opens using the FUSE page cache. The kernel refuses passthrough opens of an inode while
   * such opens exist (ETXTBSY), so passthrough is only chosen when this is 0. */
  uint32_t cached_opens;
  /* Top-level directories: uids besides root allowed in (with a count per uid). */
  acl_entry *acl;
  uint32_t acl_len, acl_cap;
  int removed;
  struct node *ino_next;  /* ino hash chain */
  struct node *name_next; /* (parent ino, name) hash chain */
} node;

typedef struct req_item {
  uint8_t id[ID_LEN];
  struct req_item *next;
} req_item;

typedef struct dir_snap {
  size_t n;
  struct {
    char *name;
    uint64_t ino;
    int is_dir;
  } *e;
} dir_snap;

typedef struct open_file {
  centry *ce;
  node *node; /* the kernel keeps the inode (so our node) alive while the file is open */
  uint64_t size;
  int passthrough;
} open_file;

typedef struct dsys_fuse {
  pthread_mutex_t mu;
  pthread_cond_t req_cv;  /* request queue non-empty or stopping */
  pthread_cond_t done_cv; /* some fetch completed or stopping */
  struct fuse_session *se;
  pthread_t loop_thread;
  int loop_started;
  int stopping;
  int splice;
  int passthrough; /* wanted by the caller and not yet refused by the kernel */
  int init_patched;
  char *mountpoint;
  char *cache_dir;
  int fetch_timeout_ms;
  dev_t dev; /* st_dev of the mounted root, for fusectl abort */
  uint64_t next_ino;
  uint64_t use_clock;
  node *root;
  node **ino_tab;
  size_t ino_cap, ino_count;
  node **name_tab;
  size_t name_cap, name_count;
  centry **id_tab;
  size_t id_cap, id_count;
  req_item *q_head, *q_tail;
  /* counters, exported by dsys_fuse_stats */
  uint64_t st_fetch_requests, st_fetch_failures, st_reads, st_read_bytes, st_timeouts, st_opens,
      st_lookups, st_files, st_pt_opens;
} dsys_fuse;

/* ---------- hashing ---------- */

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

static uint64_t name_hash(uint64_t parent, const char *name) {
  uint64_t h = 1469598103934665603ULL ^ mix64(parent);
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 1099511628211ULL;
  return mix64(h);
}

static uint64_t id_hash(const uint8_t *id) {
  uint64_t a;
  memcpy(&a, id, 8);
  return mix64(a);
}

static void ino_insert(dsys_fuse *fs, node *n);
static void name_insert(dsys_fuse *fs, node *n);
static void id_insert(dsys_fuse *fs, centry *c);

/* Tables grow by doubling when the load factor reaches 1, keeping lookups O(1) for large jobs. */
static void ino_grow(dsys_fuse *fs) {
  size_t old_cap = fs->ino_cap;
  node **old = fs->ino_tab;
  fs->ino_cap = old_cap ? old_cap * 2 : 64;
  fs->ino_tab = calloc(fs->ino_cap, sizeof(node *));
  fs->ino_count = 0;
  for (size_t i = 0; i < old_cap; i++)
    for (node *n = old[i], *nx; n; n = nx) {
      nx = n->ino_next;
      ino_insert(fs, n);
    }
  free(old);
}

static void ino_insert(dsys_fuse *fs, node *n) {
  if (fs->ino_count + 1 > fs->ino_cap) ino_grow(fs);
  size_t b = mix64(n->ino) & (fs->ino_cap - 1);
  n->ino_next = fs->ino_tab[b];
  fs->ino_tab[b] = n;
  fs->ino_count++;
}

static node *ino_find(dsys_fuse *fs, uint64_t ino) {
  if (!fs->ino_cap) return NULL;
  for (node *n = fs->ino_tab[mix64(ino) & (fs->ino_cap - 1)]; n; n = n->ino_next)
    if (n->ino == ino) return n;
  return NULL;
}

static void ino_remove(dsys_fuse *fs, node *n) {
  node **pp = &fs->ino_tab[mix64(n->ino) & (fs->ino_cap - 1)];
  for (; *pp; pp = &(*pp)->ino_next)
    if (*pp == n) {
      *pp = n->ino_next;
      fs->ino_count--;
      return;
    }
}

static void name_grow(dsys_fuse *fs) {
  size_t old_cap = fs->name_cap;
  node **old = fs->name_tab;
  fs->name_cap = old_cap ? old_cap * 2 : 64;
  fs->name_tab = calloc(fs->name_cap, sizeof(node *));
  fs->name_count = 0;
  for (size_t i = 0; i < old_cap; i++)
    for (node *n = old[i], *nx; n; n = nx) {
      nx = n->name_next;
      name_insert(fs, n);
    }
  free(old);
}

static void name_insert(dsys_fuse *fs, node *n) {
  if (fs->name_count + 1 > fs->name_cap) name_grow(fs);
  size_t b = name_hash(n->parent->ino, n->name) & (fs->name_cap - 1);
  n->name_next = fs->name_tab[b];
  fs->name_tab[b] = n;
  fs->name_count++;
}

static node *name_find(dsys_fuse *fs, uint64_t parent, const char *name) {
  if (!fs->name_cap) return NULL;
  for (node *n = fs->name_tab[name_hash(parent, name) & (fs->name_cap - 1)]; n; n = n->name_next)
    if (n->parent && n->parent->ino == parent && strcmp(n->name, name) == 0) return n;
  return NULL;
}

static void name_remove(dsys_fuse *fs, node *n) {
  node **pp = &fs->name_tab[name_hash(n->parent->ino, n->name) & (fs->name_cap - 1)];
  for (; *pp; pp = &(*pp)->name_next)
    if (*pp == n) {
      *pp = n->name_next;
      fs->name_count--;
      return;
    }
}

static void id_grow(dsys_fuse *fs) {
  size_t old_cap = fs->id_cap;
  centry **old = fs->id_tab;
  fs->id_cap = old_cap ? old_cap * 2 : 64;
  fs->id_tab = calloc(fs->id_cap, sizeof(centry *));
  fs->id_count = 0;
  for (size_t i = 0; i < old_cap; i++)
    for (centry *c = old[i], *nx; c; c = nx) {
      nx = c->next;
      id_insert(fs, c);
    }
  free(old);
}

static void id_insert(dsys_fuse *fs, centry *c) {
  if (fs->id_count + 1 > fs->id_cap) id_grow(fs);
  size_t b = id_hash(c->id) & (fs->id_cap - 1);
  c->next = fs->id_tab[b];
  fs->id_tab[b] = c;
  fs->id_count++;
}

static centry *id_find(dsys_fuse *fs, const uint8_t *id) {
  if (!fs->id_cap) return NULL;
  for (centry *c = fs->id_tab[id_hash(id) & (fs->id_cap - 1)]; c; c = c->next)
    if (memcmp(c->id, id, ID_LEN) == 0) return c;
  return NULL;
}

/* Cache entries live as long as the mount: they are tiny and keep pin counts stable. */
static centry *id_get(dsys_fuse *fs, const uint8_t *id) {
  centry *c = id_find(fs, id);
  if (c) return c;
  c = calloc(1, sizeof(*c));
  memcpy(c->id, id, ID_LEN);
  c->fd = -1;
  id_insert(fs, c);
  return c;
}

/* ---------- nodes ---------- */

static node *node_new(dsys_fuse *fs, node *parent, const char *name, int is_dir) {
  node *n = calloc(1, sizeof(*n));
  n->ino = fs->next_ino++;
  n->name = strdup(name);
  n->is_dir = is_dir;
  n->parent = parent;
  ino_insert(fs, n);
  if (parent) {
    name_insert(fs, n);
    n->next_sib = parent->first_child;
    if (parent->first_child) parent->first_child->prev_sib = n;
    parent->first_child = n;
    parent->nchildren++;
  }
  return n;
}

static void node_free(dsys_fuse *fs, node *n) {
  ino_remove(fs, n);
  free(n->name);
  free(n->acl);
  free(n);
}

/* Whether uid may see n: root always; otherwise n must lie in a top-level directory that allows
 * uid (the root itself is visible to all: its listing is filtered). A detached node is visible to
 * root only (files already open stay readable: reads are not checked). Called with fs->mu held. */
static int allowed_locked(dsys_fuse *fs, node *n, uid_t uid) {
  if (uid == 0 || n == fs->root) return 1;
  node *top = n;
  while (top->parent && top->parent != fs->root) top = top->parent;
  if (!top->parent) return 0;
  for (uint32_t i = 0; i < top->acl_len; i++)
    if (top->acl[i].uid == (uint32_t)uid) return 1;
  return 0;
}

static uid_t req_uid(fuse_req_t req) { return fuse_req_ctx(req)->uid; }

/* Detaches n's subtree from the namespace. Nodes the kernel still knows (nlookup > 0) stay in the
 * inode table until FORGET, so getattr on an inode the kernel holds keeps working. */
static void node_detach(dsys_fuse *fs, node *n) {
  while (n->first_child) node_detach(fs, n->first_child);
  node *p = n->parent;
  name_remove(fs, n);
  if (n->prev_sib) n->prev_sib->next_sib = n->next_sib;
  else p->first_child = n->next_sib;
  if (n->next_sib) n->next_sib->prev_sib = n->prev_sib;
  p->nchildren--;
  n->parent = NULL;
  n->prev_sib = n->next_sib = NULL;
  n->removed = 1;
  if (!n->is_dir) fs->st_files--;
  if (n->nlookup == 0) node_free(fs, n);
}

static void fill_attr(const node *n, struct stat *st) {
  memset(st, 0, sizeof(*st));
  st->st_ino = n->ino;
  if (n->is_dir) {
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = 2;
  } else {
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = (off_t)n->size;
    st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
  }
  st->st_blksize = 1 << 20;
}

/* ---------- cache files ---------- */

static void cache_path(dsys_fuse *fs, const uint8_t *id, char *out, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  char h[ID_LEN * 2 + 1];
  for (int i = 0; i < ID_LEN; i++) {
    h[2 * i] = hex[id[i] >> 4];
    h[2 * i + 1] = hex[id[i] & 15];
  }
  h[ID_LEN * 2] = 0;
  snprintf(out, cap, "%s/%s", fs->cache_dir, h);
}

static int same_time(struct timespec a, struct timespec b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* True when st is the cache file exactly as it was verified. */
static int still_verified(const centry *c, const struct stat *st) {
  return c->verified && st->st_dev == c->v_dev && st->st_ino == c->v_ino &&
         st->st_size == c->v_size && same_time(st->st_mtim, c->v_mtime) &&
         same_time(st->st_ctim, c->v_ctime);
}

/* Opens the cache file for c. Returns 0, ENOENT when absent or not verified as it is now (the
 * fetch callback then verifies or re-fetches it), EIO when unreadable. A file of the wrong size
 * (foreign or damaged) must never be served as the input: it is deleted and reported as absent.
 * Called with fs->mu held and c->fd < 0, so nothing of ours has the file open. */
static int open_cache_locked(dsys_fuse *fs, centry *c, uint64_t size) {
  char path[PATH_MAX];
  cache_path(fs, c->id, path, sizeof(path));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? ENOENT : EIO;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return EIO;
  }
  if ((uint64_t)st.st_size != size) {
    close(fd);
    unlink(path);
    c->verified = 0;
    return ENOENT;
  }
  if (!still_verified(c, &st)) {
    close(fd);
    c->verified = 0;
    return ENOENT;
  }
  c->fd = fd;
  return 0;
}

/* Records the cache file of c as verified as it is now (called when a fetch completed: the
 * callback has just checked its bytes against the id). Called with fs->mu held. */
static void mark_verified_locked(dsys_fuse *fs, centry *c) {
  char path[PATH_MAX];
  cache_path(fs, c->id, path, sizeof(path));
  struct stat st;
  c->verified = stat(path, &st) == 0;
  if (!c->verified) return;
  c->v_dev = st.st_dev;
  c->v_ino = st.st_ino;
  c->v_size = st.st_size;
  c->v_mtime = st.st_mtim;
  c->v_ctime = st.st_ctim;
}

static struct timespec deadline_after(int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

/* Makes c->fd valid, fetching through JS when the cache file is missing. At most one fetch per
 * call: if a successful fetch still leaves no usable file we fail with EIO instead of looping. */
static int ensure_fd_locked(dsys_fuse *fs, centry *c, uint64_t size) {
  struct timespec deadline = deadline_after(fs->fetch_timeout_ms);
  int fetched = 0;
  for (;;) {
    if (fs->stopping) return EIO;
    if (c->fd >= 0) return 0;
    if (!c->fetching) {
      int r = open_cache_locked(fs, c, size);
      if (r == 0) return 0;
      if (fetched || r != ENOENT) return EIO;
      req_item *it = calloc(1, sizeof(*it));
      memcpy(it->id, c->id, ID_LEN);
      if (fs->q_tail) fs->q_tail->next = it;
      else fs->q_head = it;
      fs->q_tail = it;
      c->fetching = 1;
      fs->st_fetch_requests++;
      pthread_cond_broadcast(&fs->req_cv);
    }
    uint64_t gen = c->gen;
    while (c->gen == gen && !fs->stopping) {
      if (pthread_cond_timedwait(&fs->done_cv, &fs->mu, &deadline) == ETIMEDOUT && c->gen == gen) {
        fs->st_timeouts++;
        return EIO;
      }
    }
    if (fs->stopping) return EIO;
    if (c->last_err) return EIO;
    fetched = 1;
  }
}

/* ---------- FUSE operations ---------- */

static dsys_fuse *FS(fuse_req_t req) { return (dsys_fuse *)fuse_req_userdata(req); }

/* Set by op_init / op_open right before libfuse writes their reply from the same thread. */
static __thread int tl_patch_init;
static __thread int tl_open_backing;

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata) {
  (void)userdata;
  return read(fd, buf, len);
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata) {
  dsys_fuse *fs = userdata;
  if (!tl_patch_init && !tl_open_backing) return writev(fd, iov, count);
  char msg[512];
  size_t len = 0;
  for (int i = 0; i < count; i++) {
    if (len + iov[i].iov_len > sizeof(msg)) return writev(fd, iov, count);
    memcpy(msg + len, iov[i].iov_base, iov[i].iov_len);
    len += iov[i].iov_len;
  }
  /* fuse_out_header: u32 len, i32 error, u64 unique */
  if (len < 16) return write(fd, msg, len);
  int32_t error;
  memcpy(&error, msg + 4, 4);
  size_t plen = len - 16;
  char *p = msg + 16;
  int init = tl_patch_init;
  tl_patch_init = 0;
  if (init && error == 0 && plen >= 40) {
    /* fuse_init_out: flags at 12, flags2 at 32, max_stack_depth at 36 */
    uint32_t flags, flags2, depth = 1;
    memcpy(&flags, p + 12, 4);
    memcpy(&flags2, p + 32, 4);
    flags |= DSYS_FUSE_INIT_EXT;
    flags2 |= DSYS_FUSE_PASSTHROUGH_FLAGS2;
    memcpy(p + 12, &flags, 4);
    memcpy(p + 32, &flags2, 4);
    memcpy(p + 36, &depth, 4);
    fs->init_patched = 1;
  } else if (tl_open_backing && error == 0 && plen == 16) {
    /* fuse_open_out: fh, open_flags at 8, backing_id at 12; keep_cache is not allowed here */
    uint32_t oflags;
    int32_t bid = tl_open_backing;
    memcpy(&oflags, p + 8, 4);
    oflags = (oflags & ~DSYS_FOPEN_KEEP_CACHE) | DSYS_FOPEN_PASSTHROUGH;
    memcpy(p + 8, &oflags, 4);
    memcpy(p + 12, &bid, 4);
  }
  return write(fd, msg, len);
}

static const struct fuse_custom_io IO = {.writev = io_writev, .read = io_read};

static void op_init(void *userdata, struct fuse_conn_info *conn) {
  dsys_fuse *fs = userdata;
  /* Large reads amortise the per-request cost; the kernel caps these to what it supports. */
  conn->max_readahead = 1 << 20;
  if (fs->splice) {
    if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
    if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  } else {
    conn->want &= ~(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  }
  tl_patch_init = fs->passthrough;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  dsys_fuse *fs = FS(req);
  struct fuse_entry_param e;
  memset(&e, 0, sizeof(e));
  uid_t uid = req_uid(req);
  pthread_mutex_lock(&fs->mu);
  fs->st_lookups++;
  node *n = name_find(fs, parent, name);
  /* Another job's directory does not exist for this uid (not even its name). */
  if (!n || !allowed_locked(fs, n, uid)) {
    pthread_mutex_unlock(&fs->mu);
    fuse_reply_err(req, ENOENT);
    return;
  }
  n->nlookup++;
  e.ino = n->ino;
  e.attr_timeout = TTL;
  e.entry_timeout = TTL;
  fill_attr(n, &e.attr);
  pthread_mutex_unlock(&fs->mu);
  if (fuse_reply_entry(req, &e) != 0) {
    /* The kernel did not get the entry, so it will never FORGET it. */
    pthread_mutex_lock(&fs->mu);
    node *m = ino_find(fs, e.ino);
    if (m && --m->nlookup == 0 && m->removed) node_free(fs, m);
    pthread_mutex_unlock(&fs->mu);
  }
}

static void forget_one(dsys_fuse *fs, fuse_ino_t ino, uint64_t nlookup) {
  node *n = ino_find(fs, ino);
  if (!n || n == fs->root) return;
  n->nlookup = n->nlookup > nlookup ? n->nlookup - nlookup : 0;
  if (n->nlookup == 0 && n->removed) node_free(fs, n);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  dsys_fuse *fs = FS(req);
  pthread_mutex_lock(&fs->mu);
  forget_one(fs, ino, nlookup);
  pthread_mutex_unlock(&fs->mu);
  fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  dsys_fuse *fs = FS(req);
  pthread_mutex_lock(&fs->mu);
  for (size_t i = 0; i < count; i++) forget_one(fs, forgets[i].ino, forgets[i].nlookup);
  pthread_mutex_unlock(&fs->mu);
  fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)fi;
  dsys_fuse *fs = FS(req);
  struct stat st;
  uid_t uid = req_uid(req);
  pthread_mutex_lock(&fs->mu);
  node *n = ino_find(fs, ino);
  int ok = n && allowed_locked(fs, n, uid);
  if (ok) fill_attr(n, &st);
  pthread_mutex_unlock(&fs->mu);
  if (!n) fuse_reply_err(req, ENOENT);
  else if (!ok) fuse_reply_err(req, EACCES);
  else fuse_reply_attr(req, &st, TTL);
}

/* readdir serves a snapshot taken at opendir so offsets stay stable while TS adds/removes files. */
static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  dsys_fuse *fs = FS(req);
  uid_t uid = req_uid(req);
  pthread_mutex_lock(&fs->mu);
  node *n = ino_find(fs, ino);
  if (!n || !n->is_dir || !allowed_locked(fs, n, uid)) {
    pthread_mutex_unlock(&fs->mu);
    fuse_reply_err(req, !n ? ENOENT : !n->is_dir ? ENOTDIR : EACCES);
    return;
  }
  dir_snap *s = calloc(1, sizeof(*s));
  s->e = calloc(n->nchildren + 2, sizeof(*s->e));
  s->e[0].name = strdup(".");
  s->e[0].ino = n->ino;
  s->e[0].is_dir = 1;
  s->e[1].name = strdup("..");
  s->e[1].ino = n->parent ? n->parent->ino : n->ino;
  s->e[1].is_dir = 1;
  s->n = 2;
  for (node *c = n->first_child; c; c = c->next_sib) {
    if (!allowed_locked(fs, c, uid)) continue; /* the root's listing: only this uid's jobs */
    s->e[s->n].name = strdup(c->name);
    s->e[s->n].ino = c->ino;
    s->e[s->n].is_dir = c->is_dir;
    s->n++;
  }
  pthread_mutex_unlock(&fs->mu);
  fi->fh = (uint64_t)(uintptr_t)s;
  fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi) {
  (void)ino;
  dir_snap *s = (dir_snap *)(uintptr_t)fi->fh;
  char *buf = malloc(size);
  size_t used = 0;
  for (size_t i = (size_t)off; i < s->n; i++) {
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_ino = s->e[i].ino;
    st.st_mode = s->e[i].is_dir ? S_IFDIR : S_IFREG;
    size_t need = fuse_add_direntry(req, buf + used, size - used, s->e[i].name, &st, (off_t)i + 1);
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf, used);
  free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)ino;
  dir_snap *s = (dir_snap *)(uintptr_t)fi->fh;
  for (size_t i = 0; i < s->n; i++) free(s->e[i].name);
  free(s->e);
  free(s);
  fuse_reply_err(req, 0);
}

/* Called with fs->mu held: a backing id for c's cache file when it is already cached (never
 * fetches), or 0 to serve the open through the FUSE page cache. */
static int passthrough_backing_locked(dsys_fuse *fs, node *n) {
  centry *c = n->ce;
  if (!fs->passthrough || !fs->init_patched || n->cached_opens > 0 || c->fetching) return 0;
  if (c->backing_id > 0) return c->backing_id;
  if (c->fd < 0 && open_cache_locked(fs, c, n->size) != 0) return 0;
  struct dsys_backing_map map = {.fd = c->fd, .flags = 0, .padding = 0};
  int id = ioctl(fuse_session_fd(fs->se), DSYS_DEV_IOC_BACKING_OPEN, &map);
  if (id <= 0) {
    /* EPERM: the kernel did not accept passthrough at INIT (or no CAP_SYS_ADMIN): stop trying. */
    if (errno == EPERM || errno == ENOTTY || errno == EINVAL) fs->passthrough = 0;
    return 0;
  }
  c->backing_id = id;
  return id;
}

static void close_handle_locked(dsys_fuse *fs, open_file *h) {
  centry *c = h->ce;
  if (h->passthrough) {
    if (--c->pt_opens == 0 && c->backing_id > 0) {
      uint32_t id = (uint32_t)c->backing_id;
      ioctl(fuse_session_fd(fs->se), DSYS_DEV_IOC_BACKING_CLOSE, &id);
      c->backing_id = 0;
    }
  } else {
    h->node->cached_opens--;
  }
  /* Closing at the last release bounds open fds and lets an evicted file's space be freed. */
  if (--c->opens == 0 && c->fd >= 0) {
    close(c->fd);
    c->fd = -1;
  }
}

/* open never fetches (only the first read does); it pins the id so eviction skips it. */
static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  dsys_fuse *fs = FS(req);
  if ((fi->flags & O_ACCMODE) != O_RDONLY) {
    fuse_reply_err(req, EROFS);
    return;
  }
  uid_t uid = req_uid(req);
  pthread_mutex_lock(&fs->mu);
  node *n = ino_find(fs, ino);
  if (!n || n->is_dir || !allowed_locked(fs, n, uid)) {
    pthread_mutex_unlock(&fs->mu);
    fuse_reply_err(req, !n ? ENOENT : n->is_dir ? EISDIR : EACCES);
    return;
  }
  /* Already open: the cache file must still be the verified one (a file changed on disk since
   * is never served; the next open after its last handle closes fetches it again). */
  struct stat cst;
  if (n->ce->fd >= 0 && (fstat(n->ce->fd, &cst) != 0 || !still_verified(n->ce, &cst))) {
    pthread_mutex_unlock(&fs->mu);
    fuse_reply_err(req, EIO);
    return;
  }
  open_file *h = malloc(sizeof(*h));
  h->ce = n->ce;
  h->node = n;
  h->size = n->size;
  h->ce->opens++;
  int backing = passthrough_backing_locked(fs, n);
  h->passthrough = backing > 0;
  if (h->passthrough) {
    h->ce->pt_opens++;
    fs->st_pt_opens++;
  } else {
    n->cached_opens++;
  }
  h->ce->last_use = ++fs->use_clock;
  fs->st_opens++;
  pthread_mutex_unlock(&fs->mu);
  fi->fh = (uint64_t)(uintptr_t)h;
  fi->keep_cache = 1; /* contents are immutable: keep the page cache across opens */
  fi->noflush = 1;
  tl_open_backing = backing;
  int rc = fuse_reply_open(req, fi);
  tl_open_backing = 0;
  if (rc != 0) {
    pthread_mutex_lock(&fs->mu);
    close_handle_locked(fs, h);
    pthread_mutex_unlock(&fs->mu);
    free(h);
  }
}

static __thread char *tl_buf;
static __thread size_t tl_cap;

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi) {
  (void)ino;
  dsys_fuse *fs = FS(req);
  open_file *h = (open_file *)(uintptr_t)fi->fh;
  if ((uint64_t)off >= h->size) {
    fuse_reply_buf(req, NULL, 0);
    return;
  }
  if ((uint64_t)off + size > h->size) size = (size_t)(h->size - (uint64_t)off);
  pthread_mutex_lock(&fs->mu);
  fs->st_reads++;
  h->ce->last_use = ++fs->use_clock;
  int err = h->ce->fd >= 0 ? 0 : ensure_fd_locked(fs, h->ce, h->size);
  int fd = h->ce->fd; /* stays open while this handle is open (closed only at last release) */
  if (!err) fs->st_read_bytes += size;
  pthread_mutex_unlock(&fs->mu);
  if (err) {
    fuse_reply_err(req, err);
    return;
  }
  if (fs->splice) {
    struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
    bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    bv.buf[0].fd = fd;
    bv.buf[0].pos = off;
    fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
    return;
  }
  if (tl_cap < size) {
    free(tl_buf);
    tl_buf = malloc(size);
    tl_cap = tl_buf ? size : 0;
    if (!tl_buf) {
      fuse_reply_err(req, ENOMEM);
      return;
    }
  }
  size_t got = 0;
  while (got < size) {
    ssize_t r = pread(fd, tl_buf + got, size - got, off + (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      fuse_reply_err(req, EIO);
      return;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  fuse_reply_buf(req, tl_buf, got);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)ino;
  dsys_fuse *fs = FS(req);
  open_file *h = (open_file *)(uintptr_t)fi->fh;
  pthread_mutex_lock(&fs->mu);
  close_handle_locked(fs, h);
  pthread_mutex_unlock(&fs->mu);
  free(h);
  fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino) {
  (void)ino;
  struct statvfs sv;
  memset(&sv, 0, sizeof(sv));
  sv.f_bsize = 4096;
  sv.f_frsize = 4096;
  sv.f_namemax = 255;
  fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops OPS = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .statfs = op_statfs,
};

/* ---------- lifecycle ---------- */

static void set_err(char *err, size_t cap, const char *fmt, ...) {
  if (!err || !cap) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, cap, fmt, ap);
  va_end(ap);
}

static void *loop_main(void *arg) {
  dsys_fuse *fs = arg;
  /* libfuse workers inherit this mask: signals belong to the Deno runtime, never to FUSE threads. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  struct fuse_loop_config *cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, 16);
  fuse_loop_cfg_set_idle_threads(cfg, 4);
  fuse_session_loop_mt(fs->se, cfg);
  fuse_loop_cfg_destroy(cfg);
  return NULL;
}

static void free_all(dsys_fuse *fs) {
  for (size_t i = 0; i < fs->ino_cap; i++)
    for (node *n = fs->ino_tab[i], *nx; n; n = nx) {
      nx = n->ino_next;
      free(n->name);
      free(n->acl);
      free(n);
    }
  for (size_t i = 0; i < fs->id_cap; i++)
    for (centry *c = fs->id_tab[i], *nx; c; c = nx) {
      nx = c->next;
      if (c->fd >= 0) close(c->fd);
      free(c);
    }
  for (req_item *r = fs->q_head, *nx; r; r = nx) {
    nx = r->next;
    free(r);
  }
  free(fs->ino_tab);
  free(fs->name_tab);
  free(fs->id_tab);
  free(fs->mountpoint);
  free(fs->cache_dir);
  pthread_mutex_destroy(&fs->mu);
  pthread_cond_destroy(&fs->req_cv);
  pthread_cond_destroy(&fs->done_cv);
  free(fs);
}

/** Mounts a new empty read-only filesystem at mountpoint and starts its loop thread.
 * Returns NULL and writes a message into err on failure. */
dsys_fuse *dsys_fuse_create(const char *mountpoint, const char *cache_dir, int fetch_timeout_ms,
                            int splice, int readahead_kb, int passthrough, char *err,
                            int err_cap) {
  dsys_fuse *fs = calloc(1, sizeof(*fs));
  pthread_mutex_init(&fs->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&fs->req_cv, &ca);
  pthread_cond_init(&fs->done_cv, &ca);
  pthread_condattr_destroy(&ca);
  fs->mountpoint = strdup(mountpoint);
  fs->cache_dir = strdup(cache_dir);
  fs->fetch_timeout_ms = fetch_timeout_ms > 0 ? fetch_timeout_ms : 30000;
  fs->splice = splice;
  fs->passthrough = passthrough;
  fs->next_ino = FUSE_ROOT_ID;
  fs->root = node_new(fs, NULL, "", 1);
  fs->root->nlookup = 1;

  char *argv[] = {"dsys-fuse", "-o",
                  "ro,allow_other,default_permissions,fsname=dsys,subtype=dsys", NULL};
  struct fuse_args args = FUSE_ARGS_INIT(3, argv);
  fs->se = fuse_session_new(&args, &OPS, sizeof(OPS), fs);
  fuse_opt_free_args(&args);
  if (!fs->se) {
    set_err(err, (size_t)err_cap, "fuse_session_new failed for %s", mountpoint);
    free_all(fs);
    return NULL;
  }
  if (fuse_session_mount(fs->se, mountpoint) != 0) {
    set_err(err, (size_t)err_cap, "fuse_session_mount(%s) failed (errno %d: %s)", mountpoint, errno,
            strerror(errno));
    fuse_session_destroy(fs->se);
    free_all(fs);
    return NULL;
  }
  /* Same fd, but our writev can now patch replies (see io_writev). */
  if (passthrough && fuse_session_custom_io(fs->se, &IO, fuse_session_fd(fs->se)) != 0)
    fs->passthrough = 0;
  if (pthread_create(&fs->loop_thread, NULL, loop_main, fs) != 0) {
    set_err(err, (size_t)err_cap, "pthread_create failed for %s", mountpoint);
    fuse_session_unmount(fs->se);
    fuse_session_destroy(fs->se);
    free_all(fs);
    return NULL;
  }
  fs->loop_started = 1;
  /* Served by the loop thread just started; needed to find the connection for a forced abort. */
  struct stat st;
  if (stat(mountpoint, &st) == 0) fs->dev = st.st_dev;
  /* The kernel caps FUSE readahead at the bdi default (128 KiB), so every sequential read costs a
   * round trip per 128 KiB; a larger window means fewer, bigger READs. Best effort (needs root). */
  if (fs->dev && readahead_kb > 0) {
    char path[128], val[32];
    snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", major(fs->dev),
             minor(fs->dev));
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      int n = snprintf(val, sizeof(val), "%d", readahead_kb);
      if (write(fd, val, (size_t)n) < 0) { /* keep the kernel default */
      }
      close(fd);
    }
  }
  return fs;
}

/* Aborts the kernel connection so a loop blocked by a still-busy (lazily detached) mount ends. */
static void abort_connection(dsys_fuse *fs) {
  if (!fs->dev) return;
  char path[128];
  snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/abort", minor(fs->dev));
  if (access(path, F_OK) != 0) mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, NULL);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (write(fd, "1", 1) < 0) { /* nothing more we can do */
    }
    close(fd);
  }
}

/** Stops the mount: fails pending reads with EIO, wakes dsys_fuse_next_request callers (they
 * return -1), unmounts and joins the loop. Call as a nonblocking FFI call: it may take a moment. */
int dsys_fuse_stop(dsys_fuse *fs) {
  pthread_mutex_lock(&fs->mu);
  int already = fs->stopping;
  fs->stopping = 1;
  pthread_cond_broadcast(&fs->req_cv);
  pthread_cond_broadcast(&fs->done_cv);
  pthread_mutex_unlock(&fs->mu);
  if (already || !fs->loop_started) return 0;
  fuse_session_exit(fs->se);
  fuse_session_unmount(fs->se); /* MNT_DETACH as root: ends the loop once nothing holds the fs */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 3;
  int busy = 0;
  if (pthread_timedjoin_np(fs->loop_thread, NULL, &ts) != 0) {
    busy = 1;
    abort_connection(fs);
    pthread_join(fs->loop_thread, NULL);
  }
  fs->loop_started = 0;
  fuse_session_destroy(fs->se);
  fs->se = NULL;
  return busy;
}

/** Frees the handle. Only after dsys_fuse_stop returned and no next_request call is running. */
void dsys_fuse_destroy(dsys_fuse *fs) {
  if (fs->loop_started) dsys_fuse_stop(fs);
  free_all(fs);
}

/* Splits a relative path into components, rejecting "." / ".." so nothing escapes the tree. */
static int split_path(const char *path, char ***out) {
  char *copy = strdup(path);
  int n = 0, cap = 8;
  char **parts = malloc(sizeof(char *) * (size_t)cap);
  for (char *save, *tok = strtok_r(copy, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
    if (strcmp(tok, ".") == 0 || strcmp(tok, "..") == 0 || strlen(tok) > 255) {
      free(parts);
      free(copy);
      return -EINVAL;
    }
    if (n == cap) parts = realloc(parts, sizeof(char *) * (size_t)(cap *= 2));
    parts[n++] = tok;
  }
  if (n == 0) {
    free(parts);
    free(copy);
    return -EINVAL;
  }
  /* parts[0] points at the start of copy: the caller frees parts[0]'s buffer via copy. */
  parts = realloc(parts, sizeof(char *) * (size_t)(n + 1));
  parts[n] = copy;
  *out = parts;
  return n;
}

/** Registers a file (creating parent directories). Idempotent for the same id and size.
 * Returns 0, -EEXIST (path taken by something else), -ENOTDIR or -EINVAL. */
int dsys_fuse_add_file(dsys_fuse *fs, const char *path, const uint8_t *id, uint64_t size) {
  char **parts;
  int n = split_path(path, &parts);
  if (n < 0) return n;
  int rc = 0;
  pthread_mutex_lock(&fs->mu);
  node *dir = fs->root;
  for (int i = 0; i < n - 1 && rc == 0; i++) {
    node *c = name_find(fs, dir->ino, parts[i]);
    if (!c) c = node_new(fs, dir, parts[i], 1);
    else if (!c->is_dir) rc = -ENOTDIR;
    dir = c;
  }
  if (rc == 0) {
    node *f = name_find(fs, dir->ino, parts[n - 1]);
    if (f) {
      if (f->is_dir || f->size != size || memcmp(f->ce->id, id, ID_LEN) != 0) rc = -EEXIST;
    } else {
      f = node_new(fs, dir, parts[n - 1], 0);
      f->size = size;
      f->ce = id_get(fs, id);
      fs->st_files++;
    }
  }
  pthread_mutex_unlock(&fs->mu);
  free(parts[n]);
  free(parts);
  return rc;
}

/** Removes a file or a whole directory subtree. Open files stay readable until closed.
 * Returns 0 or -ENOENT / -EINVAL. */
int dsys_fuse_remove_path(dsys_fuse *fs, const char *path) {
  char **parts;
  int n = split_path(path, &parts);
  if (n < 0) return n;
  pthread_mutex_lock(&fs->mu);
  node *c = fs->root;
  for (int i = 0; i < n && c; i++) c = c->is_dir ? name_find(fs, c->ino, parts[i]) : NULL;
  uint64_t parent_ino = 0;
  char name[256];
  if (c) {
    parent_ino = c->parent->ino;
    snprintf(name, sizeof(name), "%s", c->name);
    node_detach(fs, c);
  }
  struct fuse_session *se = fs->stopping ? NULL : fs->se;
  pthread_mutex_unlock(&fs->mu);
  free(parts[n]);
  free(parts);
  if (!c) return -ENOENT;
  /* Drop the kernel's cached dentry (entries have a long TTL); done without our lock held since
   * the kernel may need a FUSE thread to finish a request in that directory first. */
  if (se) fuse_lowlevel_notify_inval_entry(se, parent_ino, name, strlen(name));
  return 0;
}

/** Waits for a fetch request; writes the 16-byte file id to out_id. Returns 1 (request), 0 (timed
 * out; timeout_ms < 0 waits forever) or -1 (mount stopping). Call as a nonblocking FFI call. */
int dsys_fuse_next_request(dsys_fuse *fs, uint8_t *out_id, int timeout_ms) {
  struct timespec deadline = deadline_after(timeout_ms < 0 ? 0 : timeout_ms);
  pthread_mutex_lock(&fs->mu);
  int rc = 0;
  for (;;) {
    if (fs->stopping) {
      rc = -1;
      break;
    }
    if (fs->q_head) {
      req_item *it = fs->q_head;
      fs->q_head = it->next;
      if (!fs->q_head) fs->q_tail = NULL;
      memcpy(out_id, it->id, ID_LEN);
      free(it);
      rc = 1;
      break;
    }
    if (timeout_ms < 0) pthread_cond_wait(&fs->req_cv, &fs->mu);
    else if (pthread_cond_timedwait(&fs->req_cv, &fs->mu, &deadline) == ETIMEDOUT) break;
  }
  pthread_mutex_unlock(&fs->mu);
  return rc;
}

/** Reports the outcome of a fetch: err 0 means the cache file now exists (created atomically),
 * otherwise readers waiting for it get EIO and the next read retries. Returns 0, or -ENOENT if no
 * fetch of that id was outstanding. */
int dsys_fuse_complete(dsys_fuse *fs, const uint8_t *id, int err) {
  pthread_mutex_lock(&fs->mu);
  centry *c = id_find(fs, id);
  int rc = -ENOENT;
  if (c && c->fetching) {
    c->fetching = 0;
    c->last_err = err;
    c->gen++;
    if (err) fs->st_fetch_failures++;
    else mark_verified_locked(fs, c);
    pthread_cond_broadcast(&fs->done_cv);
    rc = 0;
  }
  pthread_mutex_unlock(&fs->mu);
  return rc;
}

/** Starts a fetch of id with no reader waiting (to warm the cache before a job opens its inputs,
 * so those opens get passthrough). Returns 1 when the caller must now fetch and then call
 * dsys_fuse_complete, 0 when the cache file already exists, 2 when a fetch is already in flight. */
int dsys_fuse_begin_fetch(dsys_fuse *fs, const uint8_t *id) {
  pthread_mutex_lock(&fs->mu);
  centry *c = id_get(fs, id);
  char path[PATH_MAX];
  cache_path(fs, id, path, sizeof(path));
  int rc;
  struct stat st;
  if (c->fetching) rc = 2;
  else if (stat(path, &st) == 0 && still_verified(c, &st)) rc = 0;
  else {
    c->fetching = 1;
    fs->st_fetch_requests++;
    rc = 1;
  }
  pthread_mutex_unlock(&fs->mu);
  return rc;
}

/** Lets uid into the top-level directory `name` (delta +1) or takes one such grant back (-1); a
 * uid is allowed while its count is above 0. Returns the new count, or -ENOENT when there is no
 * such directory, -EINVAL for a bad name or uid 0 (root is always allowed). */
int dsys_fuse_allow(dsys_fuse *fs, const char *name, uint32_t uid, int delta) {
  if (uid == 0 || !*name || strchr(name, '/')) return -EINVAL;
  pthread_mutex_lock(&fs->mu);
  node *d = name_find(fs, fs->root->ino, name);
  int rc = -ENOENT;
  if (d && d->is_dir) {
    uint32_t i = 0;
    while (i < d->acl_len && d->acl[i].uid != uid) i++;
    if (i == d->acl_len && delta > 0) {
      if (d->acl_len == d->acl_cap) {
        d->acl_cap = d->acl_cap ? d->acl_cap * 2 : 4;
        d->acl = realloc(d->acl, sizeof(acl_entry) * d->acl_cap);
      }
      d->acl[d->acl_len++] = (acl_entry){.uid = uid, .count = 0};
    }
    if (i < d->acl_len) {
      long n = (long)d->acl[i].count + delta;
      d->acl[i].count = n < 0 ? 0 : (uint32_t)n;
      rc = (int)d->acl[i].count;
      if (rc == 0) d->acl[i] = d->acl[--d->acl_len];
    } else rc = 0;
  }
  pthread_mutex_unlock(&fs->mu);
  return rc;
}

/** Adds delta to the explicit pin count of id (creating the entry). Returns the new count. */
int dsys_fuse_pin(dsys_fuse *fs, const uint8_t *id, int delta) {
  pthread_mutex_lock(&fs->mu);
  centry *c = id_get(fs, id);
  long p = (long)c->pins + delta;
  c->pins = p < 0 ? 0 : (uint32_t)p;
  int rc = (int)c->pins;
  pthread_mutex_unlock(&fs->mu);
  return rc;
}

/** Deletes id's cache file unless it is open through the mount, pinned or being fetched.
 * Returns 1 (evicted or already absent), 0 (busy), or -errno from unlink. */
int dsys_fuse_evict(dsys_fuse *fs, const uint8_t *id) {
  pthread_mutex_lock(&fs->mu);
  centry *c = id_find(fs, id);
  int rc = 1;
  if (c && (c->opens || c->pins || c->fetching)) rc = 0;
  else {
    char path[PATH_MAX];
    cache_path(fs, id, path, sizeof(path));
    /* Unlinking under the lock: a concurrent first read either sees the file or fetches again. */
    if (unlink(path) != 0 && errno != ENOENT) rc = -errno;
  }
  pthread_mutex_unlock(&fs->mu);
  return rc;
}

/** Returns id's last-use clock (bumped by open and read; 0 if never used) for LRU ordering. */
uint64_t dsys_fuse_last_use(dsys_fuse *fs, const uint8_t *id) {
  pthread_mutex_lock(&fs->mu);
  centry *c = id_find(fs, id);
  uint64_t v = c ? c->last_use : 0;
  pthread_mutex_unlock(&fs->mu);
  return v;
}

/** Writes 9 counters: fetch_requests, fetch_failures, reads, read_bytes, timeouts, opens, lookups,
 * files, passthrough_opens. */
void dsys_fuse_stats(dsys_fuse *fs, uint64_t *out) {
  pthread_mutex_lock(&fs->mu);
  out[0] = fs->st_fetch_requests;
  out[1] = fs->st_fetch_failures;
  out[2] = fs->st_reads;
  out[3] = fs->st_read_bytes;
  out[4] = fs->st_timeouts;
  out[5] = fs->st_opens;
  out[6] = fs->st_lookups;
  out[7] = fs->st_files;
  out[8] = fs->st_pt_opens;
  pthread_mutex_unlock(&fs->mu);
}
