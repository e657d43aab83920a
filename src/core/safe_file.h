/* Replacing a file safely, for every writer of output files (converted
 * GGUFs, calibration caches, later session files).
 *
 * The new content goes to a temporary in the target's directory named
 * "<target>.tmp.<pid>.<random>", which is synced, renamed over the target,
 * and the directory synced: a reader sees the old file or the new one, never
 * a partial one. A target that exists and is not a regular file (a symbolic
 * link, a device such as /dev/null, a fifo, a socket, a directory) is
 * refused, never replaced; so is a target that is the same file as one of
 * the caller's inputs (st_dev/st_ino, so through symlinks and hard links).
 *
 * Open temporaries are listed where an async-signal-safe SIGINT/SIGTERM/
 * SIGHUP handler finds them (installed by the program, once, with
 * kvs_safe_file_cleanup_on_signals): it unlinks them and re-raises the
 * signal. A temporary left by a writer that could not clean up (kill -9, a
 * crash) carries its pid: the next write of the same target removes it once
 * that pid no longer runs. */
#ifndef KVS_CORE_SAFE_FILE_H
#define KVS_CORE_SAFE_FILE_H

#include <stdio.h>

#include "kvslim.h"

/* An input the target must not be: what names it in the message
 * ("input model", "calibration text"). */
typedef struct kvs_safe_protect { const char *path, *what; } kvs_safe_protect;

/* May `path` be replaced? KVS_OK when it does not exist or is a regular file
 * (not through a symlink) that is none of the n protected files (those that
 * do not exist are skipped). KVS_ERR_INVALID_ARG when it is a protected
 * file, KVS_ERR_IO when it is not a regular file or cannot be examined. */
kvs_status kvs_safe_check_target(const char *path, const kvs_safe_protect *protect, int n);

typedef struct kvs_safe_file kvs_safe_file;

/* Checks the target (no protected files), removes its stale temporaries,
 * creates and registers a new one (mode: the target's if it exists, else
 * 0644) and opens a stream on it. */
kvs_status kvs_safe_open(const char *path, kvs_safe_file **out);
FILE *kvs_safe_stream(kvs_safe_file *f);
const char *kvs_safe_tmp_path(const kvs_safe_file *f);
/* Flush, fsync, check the target again, rename over it, fsync the directory.
 * Frees f; on any failure the temporary is removed and the target left as
 * it was. */
kvs_status kvs_safe_commit(kvs_safe_file *f);
/* Remove the temporary and free f (NULL is fine). */
void kvs_safe_abort(kvs_safe_file *f);

/* Remove "<path>.tmp.<pid>.*" regular files whose pid is not running (not
 * this process's); returns how many. */
int kvs_safe_remove_stale(const char *path);

/* Install the handler for SIGINT, SIGTERM and SIGHUP (a signal the process
 * ignores stays ignored). For programs; the library never calls it. */
void kvs_safe_file_cleanup_on_signals(void);

#endif
