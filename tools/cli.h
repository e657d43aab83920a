/* Shared pieces of the kvslim command-line tool: option parsing helpers,
 * model/session setup from common flags, file reading. The CLI uses only the
 * public API (include/kvslim.h). */
#ifndef KVS_TOOLS_CLI_H
#define KVS_TOOLS_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include "kvslim.h"

typedef struct cli_common {
    const char *model;
    int32_t threads;     /* 0 = all CPUs */
    uint32_t ctx;        /* 0 = command default */
    uint32_t batch;
    kvs_kv_type kv_type;
    uint32_t kv_window, kv_sinks, kv_page;
    uint64_t kv_budget;
    bool no_repack;         /* --no-repack: the matmul reads the file's weights in place */
    char kv_layers[8192];   /* --kv rules and --kv-layer rules joined with ';', in order */
} cli_common;

void cli_common_init(cli_common *c);
/* If argv[*i] is a common option, consume it (and its value) and return 1;
 * return 0 if not; -1 on a bad value (message printed). */
int cli_common_option(cli_common *c, int argc, char **argv, int *i);
const char *cli_common_help(void);

/* Value of an option that takes an argument, or NULL (message printed). */
const char *cli_value(int argc, char **argv, int *i);
bool cli_parse_int(const char *s, long long lo, long long hi, long long *out);
bool cli_parse_float(const char *s, double *out);
/* "4096", "4k", "1M" */
bool cli_parse_count(const char *s, unsigned long long *out);

/* Load the model named by -m, or print why not. */
kvs_model *cli_load_model(const cli_common *c);
/* Session parameters from the common options (-c, -b, -t, --kv...), warning
 * when the context exceeds the trained one; a session or an engine with them. */
kvs_session_params cli_session_params(const kvs_model *m, const cli_common *c, uint32_t default_ctx);
kvs_session *cli_new_session(const kvs_model *m, const cli_common *c, uint32_t default_ctx);
kvs_engine *cli_new_engine(const kvs_model *m, const cli_common *c, uint32_t default_ctx);
/* Read a whole file (NUL-terminated), or print why not. */
char *cli_read_file(const char *path, size_t *len);
/* Tokenize with a growing buffer; returns malloc'd tokens or NULL (printed). */
kvs_token *cli_tokenize(const kvs_model *m, const char *text, size_t len, int add_bos,
                        bool special, size_t *n);
double cli_now(void);
void cli_error(const char *what); /* "kvslim: <what>: <last error>" */

int cmd_run(int argc, char **argv);
int cmd_ppl(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_compress(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
