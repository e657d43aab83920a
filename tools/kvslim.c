/* kvslim command-line tool: dispatches to one subcommand per file. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmd_plan.h"
#include "core/safe_file.h"
#include "kvslim.h"

static void usage(FILE *f) {
    fprintf(f,
            "kvslim: an inference engine whose KV cache is small by design\n\n"
            "usage: kvslim COMMAND [options]   (kvslim COMMAND --help for details)\n\n"
            "commands:\n"
            "  run     generate text from a prompt\n"
            "  ppl     perplexity of a text file\n"
            "  info    model architecture, sizes and KV bytes per token\n"
            "  bench   prefill/decode speed at several KV depths vs the memory limit\n"
            "  plan    KV memory, max context, concurrency and cost on given hardware\n"
            "  eval    quality of KV schemes vs an uncompressed cache (ppl, KL, passkey, speed)\n"
            "  compress  retrofit latent KV / layer sharing onto a GQA model, write a GGUF\n"
            "  serve   an OpenAI-compatible HTTP server on one shared KV pool\n");
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    kvs_safe_file_cleanup_on_signals(); /* SIGINT/SIGTERM remove half-written outputs' temporaries */
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) { usage(stdout); return 0; }
    if (!strcmp(cmd, "run")) return cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "ppl")) return cmd_ppl(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "plan")) return kvs_cmd_plan(argc - 1, argv + 1);
    if (!strcmp(cmd, "compress")) return cmd_compress(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 1, argv + 1);
    fprintf(stderr, "kvslim: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
