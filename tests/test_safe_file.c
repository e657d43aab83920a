/* Safe replacement of output files (src/core/safe_file.c), as `compress -o`
 * and the calibration cache use it through the GGUF writer:
 *   - a target that is a symlink, a directory, a fifo or a device is refused
 *     and left as it was (the writer used to rename its temporary over it:
 *     as root, -o /dev/null replaced /dev/null; /dev/null is only examined
 *     here, never written);
 *   - a target that is a protected input, by name, symlink or hard link, is
 *     refused naming the input;
 *   - a write replaces a regular file whole, keeps its mode, leaves no
 *     temporary; an abort leaves the old content;
 *   - SIGTERM / SIGINT in the middle of a write remove the temporary (a
 *     child process, synchronised by a pipe) and the signal still ends it;
 *   - a temporary left by kill -9 is removed by the next write of the same
 *     target once its writer's pid is gone; a live writer's is kept. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/safe_file.h"
#include "gguf/gguf.h"
#include "test_util.h"

static char g_dir[256];

static const char *at(const char *name) {
    static char buf[64][512]; /* a ring: the test holds fewer paths at once */
    static int k;
    k = (k + 1) % 64;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static int count_tmp(void) {
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static void put(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) { fputs(text, f); fclose(f); }
}

static bool holds(const char *path, const char *text) {
    size_t n;
    char *b = test_read_file(path, &n);
    bool ok = b && n == strlen(text) && !memcmp(b, text, n);
    free(b);
    return ok;
}

/* Write text to path through a safe file. */
static kvs_status safe_put(const char *path, const char *text) {
    kvs_safe_file *f = NULL;
    kvs_status st = kvs_safe_open(path, &f);
    if (st != KVS_OK) return st;
    fputs(text, kvs_safe_stream(f));
    return kvs_safe_commit(f);
}

/* A one-tensor GGUF written to path by the GGUF writer. */
static kvs_status write_gguf(const char *path) {
    kvs_gguf_writer *w = NULL;
    kvs_status st = kvs_gguf_writer_new(&w);
    if (st != KVS_OK) return st;
    kvs_gguf_writer_set_str(w, "general.architecture", "llama");
    float data[32] = {0};
    int64_t ne[1] = {32};
    kvs_gguf_writer_add_tensor(w, "x", KVS_TYPE_F32, 1, ne, data, sizeof data);
    st = kvs_gguf_writer_write(w, path);
    kvs_gguf_writer_free(w);
    return st;
}

static void test_targets(void) {
    const char *reg = at("regular"), *lnk = at("link"), *sub = at("subdir");
    put(reg, "old");
    CHECK(symlink(reg, lnk) == 0);
    CHECK(mkdir(sub, 0755) == 0);
    const char *fifo = at("fifo");
    CHECK(mkfifo(fifo, 0644) == 0);

    CHECK(kvs_safe_check_target(at("absent"), NULL, 0) == KVS_OK);
    CHECK(kvs_safe_check_target(reg, NULL, 0) == KVS_OK);
    struct { const char *path, *kind; } bad[] = {
        {lnk, "symbolic link"}, {sub, "directory"}, {fifo, "fifo"}, {"/dev/null", "device"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        kvs_status st = kvs_safe_check_target(bad[i].path, NULL, 0);
        CHECKF(st == KVS_ERR_IO && strstr(kvs_last_error(), bad[i].kind) && strstr(kvs_last_error(), "refusing"),
               "%s: %s '%s'", bad[i].path, kvs_status_name(st), kvs_last_error());
        if (!strcmp(bad[i].path, "/dev/null")) continue; /* never written, whatever the result */
        kvs_safe_file *f = NULL;
        CHECK(kvs_safe_open(bad[i].path, &f) == KVS_ERR_IO && f == NULL);
        CHECKF(write_gguf(bad[i].path) == KVS_ERR_IO && strstr(kvs_last_error(), bad[i].kind), "gguf writer onto %s: '%s'",
               bad[i].kind, kvs_last_error());
    }
    /* all still what they were */
    struct stat st;
    char target[512];
    ssize_t tl = readlink(lnk, target, sizeof target - 1);
    CHECK(tl > 0 && (target[tl] = '\0', !strcmp(target, reg)));
    CHECK(lstat(lnk, &st) == 0 && S_ISLNK(st.st_mode) && holds(reg, "old"));
    CHECK(lstat(sub, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK(lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode));
    CHECK(count_tmp() == 0);

    /* protected inputs: by name, through a symlink, through a hard link */
    const char *cal = at("calib.txt"), *hard = at("hardlink");
    put(cal, "text");
    CHECK(link(cal, hard) == 0);
    const char *cal_link = at("calib-link");
    CHECK(symlink(cal, cal_link) == 0);
    kvs_safe_protect prot[2] = {{reg, "input model"}, {cal, "calibration text"}};
    const char *same[] = {cal, hard, cal_link};
    for (size_t i = 0; i < 3; i++) {
        kvs_status s = kvs_safe_check_target(same[i], prot, 2);
        CHECKF(s == KVS_ERR_INVALID_ARG && strstr(kvs_last_error(), "calibration text") &&
               strstr(kvs_last_error(), "refusing to overwrite"), "%s: '%s'", same[i], kvs_last_error());
    }
    CHECK(kvs_safe_check_target(lnk, prot, 2) == KVS_ERR_INVALID_ARG && strstr(kvs_last_error(), "input model"));
    CHECK(kvs_safe_check_target(at("other"), prot, 2) == KVS_OK);
    kvs_safe_protect gone = {at("no-such-input"), "input"};
    CHECK(kvs_safe_check_target(reg, &gone, 1) == KVS_OK);
    CHECK(holds(cal, "text"));
    unlink(cal_link); unlink(hard); unlink(cal); unlink(fifo); rmdir(sub); unlink(lnk);
}

static void test_replace(void) {
    const char *reg = at("regular");
    CHECK(chmod(reg, 0640) == 0);
    CHECKF(safe_put(reg, "new content") == KVS_OK, "%s", kvs_last_error());
    struct stat st;
    CHECK(holds(reg, "new content") && stat(reg, &st) == 0 && (st.st_mode & 0777) == 0640);
    CHECK(count_tmp() == 0);
    /* abort: the old content stays, no temporary */
    kvs_safe_file *f = NULL;
    CHECK(kvs_safe_open(reg, &f) == KVS_OK);
    if (f) {
        CHECK(strstr(kvs_safe_tmp_path(f), ".tmp.") != NULL && access(kvs_safe_tmp_path(f), F_OK) == 0);
        fputs("half", kvs_safe_stream(f));
        kvs_safe_abort(f);
    }
    CHECK(holds(reg, "new content") && count_tmp() == 0);
    kvs_safe_abort(NULL);
    /* a new file, and the GGUF writer's round trip */
    const char *g = at("out.gguf");
    CHECK(write_gguf(g) == KVS_OK);
    kvs_gguf *gg = NULL;
    CHECK(kvs_gguf_open(g, false, &gg) == KVS_OK && kvs_gguf_n_tensors(gg) == 1);
    kvs_gguf_close(gg);
    CHECK(count_tmp() == 0);
    unlink(g);
    CHECK(kvs_safe_open("", &f) == KVS_ERR_INVALID_ARG && !f);
    CHECK(kvs_safe_open(at("no-such-dir/x"), &f) == KVS_ERR_IO && !f);
}

/* A child that opens a safe file on target, writes, reports its
 * temporary's name through the pipe, and waits for a signal. */
static pid_t start_writer(const char *target, char *tmp_name, size_t cap) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        kvs_safe_file_cleanup_on_signals();
        kvs_safe_file *f = NULL;
        if (kvs_safe_open(target, &f) != KVS_OK) _exit(3);
        fputs("partial", kvs_safe_stream(f));
        fflush(kvs_safe_stream(f));
        const char *t = kvs_safe_tmp_path(f);
        if (write(fds[1], t, strlen(t) + 1) < 0) _exit(4);
        close(fds[1]);
        for (;;) pause();
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = read(fds[0], tmp_name + n, cap - 1 - n)) > 0) {
        n += (size_t)r;
        if (memchr(tmp_name, '\0', n)) break;
    }
    tmp_name[n] = '\0';
    close(fds[0]);
    return pid;
}

static void test_signals(void) {
    const char *reg = at("regular");
    const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        char tmp[600];
        pid_t pid = start_writer(reg, tmp, sizeof tmp);
        CHECK(pid > 0);
        if (pid <= 0) continue;
        CHECKF(tmp[0] && access(tmp, F_OK) == 0, "signal %d: the writer's temporary '%s' does not exist", sigs[i], tmp);
        kill(pid, sigs[i]);
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == sigs[i], "signal %d: child status %#x", sigs[i], status);
        CHECKF(access(tmp, F_OK) != 0 && count_tmp() == 0, "signal %d left '%s'", sigs[i], tmp);
        CHECK(holds(reg, "new content"));
    }
    /* kill -9 cannot be caught: the next write removes what it left */
    char tmp[600];
    pid_t pid = start_writer(reg, tmp, sizeof tmp);
    CHECK(pid > 0);
    if (pid > 0) {
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECK(access(tmp, F_OK) == 0 && count_tmp() == 1);
        /* a live writer's temporary (the parent's pid) and an unrelated name stay */
        char live[600], other[600];
        snprintf(live, sizeof live, "%s.tmp.%lld.abcdef", reg, (long long)getppid());
        snprintf(other, sizeof other, "%s.tmp.notapid", reg);
        put(live, "x");
        put(other, "y");
        CHECK(kvs_safe_remove_stale(reg) == 1);
        CHECK(access(tmp, F_OK) != 0 && access(live, F_OK) == 0 && access(other, F_OK) == 0);
        unlink(live);
        unlink(other);
    }
    /* and through kvs_safe_open itself */
    pid = start_writer(reg, tmp, sizeof tmp);
    if (pid > 0) {
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        CHECK(access(tmp, F_OK) == 0);
        CHECK(safe_put(reg, "after a kill") == KVS_OK);
        CHECK(access(tmp, F_OK) != 0 && count_tmp() == 0 && holds(reg, "after a kill"));
    }
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/kvs_test_safe_XXXXXX");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); return 1; }
    test_targets();
    test_replace();
    test_signals();
    unlink(at("regular"));
    CHECKF(rmdir(g_dir) == 0, "%s not empty: %s", g_dir, strerror(errno));
    return test_finish("safe_file");
}
