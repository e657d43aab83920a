/* Safe replacement of output files: target checks, the temporary, the
 * rename, and the signal-time cleanup of temporaries (see safe_file.h). */
#include "core/safe_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"

/* ---- the registry the signal handler reads -------------------------------
 * A slot is claimed (1) by compare-and-swap, its path written, then made
 * visible (2) before the file is created; the handler unlinks every visible
 * path. Only lock-free atomics and unlink: async-signal-safe. */
#define N_SLOTS 16
#define SLOT_PATH 4096
static char g_slot_path[N_SLOTS][SLOT_PATH];
static _Atomic int g_slot_state[N_SLOTS];

static int slot_claim(const char *path) {
    if (strlen(path) >= SLOT_PATH) return -1;
    for (int i = 0; i < N_SLOTS; i++) {
        int free_ = 0;
        if (atomic_compare_exchange_strong(&g_slot_state[i], &free_, 1)) {
            memcpy(g_slot_path[i], path, strlen(path) + 1);
            atomic_store(&g_slot_state[i], 2);
            return i;
        }
    }
    return -1; /* all busy: still written safely, just not cleaned on a signal */
}

static void slot_release(int i) {
    if (i >= 0) atomic_store(&g_slot_state[i], 0);
}

static void on_signal(int sig) {
    int saved = errno;
    for (int i = 0; i < N_SLOTS; i++)
        if (atomic_load(&g_slot_state[i]) == 2) unlink(g_slot_path[i]);
    errno = saved;
    signal(sig, SIG_DFL);
    raise(sig);
}

void kvs_safe_file_cleanup_on_signals(void) {
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        struct sigaction old, sa;
        if (sigaction(sigs[i], NULL, &old) != 0 || old.sa_handler == SIG_IGN) continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        for (size_t j = 0; j < sizeof sigs / sizeof *sigs; j++) sigaddset(&sa.sa_mask, sigs[j]);
        sigaction(sigs[i], &sa, NULL);
    }
}

/* ---- target checks -------------------------------------------------------- */

static const char *kind_of(mode_t m) {
    if (S_ISLNK(m)) return "a symbolic link";
    if (S_ISDIR(m)) return "a directory";
    if (S_ISCHR(m) || S_ISBLK(m)) return "a device";
    if (S_ISFIFO(m)) return "a fifo";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

/* lstat of an existing target: regular files only. *exists false if absent. */
static kvs_status check_type(const char *path, struct stat *st, bool *exists) {
    *exists = false;
    if (lstat(path, st) != 0) {
        if (errno == ENOENT) return KVS_OK;
        return kvs_fail(KVS_ERR_IO, "'%s': cannot examine the output path: %s", path, strerror(errno));
    }
    *exists = true;
    if (!S_ISREG(st->st_mode))
        return kvs_fail(KVS_ERR_IO, "'%s' is %s: refusing to replace it; give the path of a regular file", path,
                        kind_of(st->st_mode));
    return KVS_OK;
}

kvs_status kvs_safe_check_target(const char *path, const kvs_safe_protect *protect, int n) {
    if (!path || !*path) return kvs_fail(KVS_ERR_INVALID_ARG, "output: empty path");
    /* the inputs first, followed through symlinks: "-o" naming an input is
     * that, whatever the kind of path */
    struct stat t;
    if (stat(path, &t) == 0)
        for (int i = 0; i < n; i++) {
            struct stat s;
            if (protect[i].path && stat(protect[i].path, &s) == 0 && s.st_dev == t.st_dev && s.st_ino == t.st_ino)
                return kvs_fail(KVS_ERR_INVALID_ARG, "'%s' is the %s '%s': refusing to overwrite it; give another output",
                                path, protect[i].what ? protect[i].what : "input", protect[i].path);
        }
    bool exists;
    return check_type(path, &t, &exists);
}

/* ---- stale temporaries ------------------------------------------------------ */

/* dir (or ".") and the base name of path, into dir (cap bytes). */
static const char *split_path(const char *path, char *dir, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) { snprintf(dir, cap, "."); return path; }
    size_t n = (size_t)(slash - path);
    if (n == 0) n = 1; /* "/name" */
    if (n >= cap) n = cap - 1;
    memcpy(dir, path, n);
    dir[n] = '\0';
    return slash + 1;
}

int kvs_safe_remove_stale(const char *path) {
    char dir[SLOT_PATH];
    const char *base = split_path(path, dir, sizeof dir);
    const size_t bl = strlen(base);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        if (strncmp(nm, base, bl) || strncmp(nm + bl, ".tmp.", 5)) continue;
        const char *p = nm + bl + 5;
        long long pid = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 12) { pid = pid * 10 + (*p++ - '0'); digits++; }
        if (!digits || *p != '.' || pid <= 0 || pid == (long long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* running, or not ours to judge */
        char full[SLOT_PATH];
        if ((size_t)snprintf(full, sizeof full, "%s/%s", dir, nm) >= sizeof full) continue;
        struct stat st;
        if (lstat(full, &st) == 0 && S_ISREG(st.st_mode) && unlink(full) == 0) removed++;
    }
    closedir(d);
    return removed;
}

/* ---- writing ---------------------------------------------------------------- */

struct kvs_safe_file {
    char *path, *tmp;
    FILE *f;
    int slot;
};

static void sync_dir(const char *path, int *err) {
    char dir[SLOT_PATH];
    split_path(path, dir, sizeof dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) { *err = errno; return; }
    if (fsync(fd) != 0 && errno != EINVAL) *err = errno; /* EINVAL: this file system cannot sync directories */
    close(fd);
}

kvs_status kvs_safe_open(const char *path, kvs_safe_file **out) {
    *out = NULL;
    if (!path || !*path) return kvs_fail(KVS_ERR_INVALID_ARG, "output: empty path");
    struct stat st;
    bool exists;
    kvs_status s = check_type(path, &st, &exists);
    if (s != KVS_OK) return s;
    kvs_safe_remove_stale(path);
    kvs_safe_file *f = kvs_calloc(1, sizeof *f);
    size_t pl = strlen(path), cap = pl + 48;
    if (f) {
        f->path = kvs_strdup(path);
        f->tmp = kvs_malloc(cap);
        f->slot = -1;
    }
    if (!f || !f->path || !f->tmp) {
        if (f) { kvs_free(f->path); kvs_free(f->tmp); kvs_free(f); }
        return kvs_fail(KVS_ERR_NOMEM, "'%s': out of memory", path);
    }
    const mode_t mode = exists ? (st.st_mode & 07777) : 0644;
    static _Atomic uint64_t counter;
    int fd = -1, e = 0;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        uint64_t r = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)clock() ^ (atomic_fetch_add(&counter, 1) << 20);
        snprintf(f->tmp, cap, "%s.tmp.%lld.%06llx", path, (long long)getpid(), (unsigned long long)(r & 0xffffff));
        f->slot = slot_claim(f->tmp); /* visible to the handler before the file exists */
        fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            e = errno;
            slot_release(f->slot);
            f->slot = -1;
            if (e != EEXIST) break;
        }
    }
    if (fd < 0) {
        s = kvs_fail(KVS_ERR_IO, "cannot create a temporary file next to '%s': %s", path, strerror(e));
        kvs_free(f->path); kvs_free(f->tmp); kvs_free(f);
        return s;
    }
    (void)fchmod(fd, mode);
    f->f = fdopen(fd, "wb");
    if (!f->f) {
        e = errno;
        close(fd);
        kvs_safe_abort(f);
        return kvs_fail(KVS_ERR_IO, "'%s': fdopen failed: %s", path, strerror(e));
    }
    *out = f;
    return KVS_OK;
}

FILE *kvs_safe_stream(kvs_safe_file *f) { return f ? f->f : NULL; }
const char *kvs_safe_tmp_path(const kvs_safe_file *f) { return f ? f->tmp : NULL; }

static void release(kvs_safe_file *f) {
    slot_release(f->slot);
    kvs_free(f->path);
    kvs_free(f->tmp);
    kvs_free(f);
}

void kvs_safe_abort(kvs_safe_file *f) {
    if (!f) return;
    if (f->f) fclose(f->f);
    unlink(f->tmp);
    release(f);
}

kvs_status kvs_safe_commit(kvs_safe_file *f) {
    if (!f) return kvs_fail(KVS_ERR_INVALID_ARG, "output: NULL file");
    int e = 0;
    bool ok = fflush(f->f) == 0;
    if (!ok) e = errno;
    if (ok && fsync(fileno(f->f)) != 0) { ok = false; e = errno; }
    if (fclose(f->f) != 0 && ok) { ok = false; e = errno; }
    f->f = NULL;
    if (!ok) {
        kvs_status s = kvs_fail(KVS_ERR_IO, "writing '%s' failed: %s", f->path, e ? strerror(e) : "short write");
        kvs_safe_abort(f);
        return s;
    }
    /* the target may have changed kind while we wrote */
    struct stat st;
    bool exists;
    kvs_status s = check_type(f->path, &st, &exists);
    if (s != KVS_OK) { kvs_safe_abort(f); return s; }
    if (rename(f->tmp, f->path) != 0) {
        e = errno;
        s = kvs_fail(KVS_ERR_IO, "cannot rename the temporary over '%s': %s", f->path, strerror(e));
        kvs_safe_abort(f);
        return s;
    }
    e = 0;
    sync_dir(f->path, &e);
    s = e ? kvs_fail(KVS_ERR_IO, "'%s' written, but its directory could not be synced: %s", f->path, strerror(e)) : KVS_OK;
    release(f);
    return s;
}
