/* Hardware for the planner: a small table of common accelerators and
 * machines, "custom:mem=..,bw=..,price=.." specs, and "this" machine
 * (physical memory from sysconf, read bandwidth measured on the spot).
 *
 * Memory is the device memory a model can use; bandwidth is the vendor's
 * peak memory bandwidth (decode upper bounds are therefore optimistic);
 * prices are rough on-demand cloud rates or purchase price amortized over
 * three years of continuous use — override them with custom:. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "plan/plan.h"

#define GiB 1073741824.0

static const kvs_plan_hw k_hw[] = {
    /* NVIDIA H100 SXM5 80GB: HBM3 3.35 TB/s (NVIDIA datasheet); ~$2.50/h on demand. */
    {"h100-80g", 80 * GiB, 3.35e12, 2.50, "NVIDIA H100 SXM 80GB HBM3, 3.35 TB/s (datasheet)", 0},
    /* NVIDIA H200 141GB: HBM3e 4.8 TB/s (datasheet); ~$3.50/h on demand. */
    {"h200", 141e9, 4.8e12, 3.50, "NVIDIA H200 141GB HBM3e, 4.8 TB/s (datasheet)", 0},
    /* GeForce RTX 4090: 24 GB GDDR6X, 1008 GB/s; ~$0.40/h rented. */
    {"rtx4090", 24 * GiB, 1.008e12, 0.40, "GeForce RTX 4090 24GB GDDR6X, 1008 GB/s", 0},
    /* GeForce RTX 3090: 24 GB GDDR6X, 936 GB/s; ~$0.25/h rented. */
    {"rtx3090", 24 * GiB, 0.936e12, 0.25, "GeForce RTX 3090 24GB GDDR6X, 936 GB/s", 0},
    /* Apple M3 Max, 128 GB unified memory, 400 GB/s (Apple spec); $4,999 over 3 years. */
    {"m3max-128g", 128 * GiB, 400e9, 0.19, "Apple M3 Max 128GB unified, 400 GB/s; price = $4,999 / 3 years", 0},
    /* NVIDIA DGX Spark: 128 GB LPDDR5x unified, 273 GB/s (datasheet); $3,999 over 3 years. */
    {"dgx-spark", 128 * GiB, 273e9, 0.15, "NVIDIA DGX Spark 128GB LPDDR5x, 273 GB/s; price = $3,999 / 3 years", 0},
};

static const struct { const char *alias, *name; } k_alias[] = {
    {"h100", "h100-80g"}, {"h100-80gb", "h100-80g"}, {"h200-141g", "h200"}, {"h200-141gb", "h200"},
    {"4090", "rtx4090"}, {"rtx-4090", "rtx4090"}, {"3090", "rtx3090"}, {"rtx-3090", "rtx3090"},
    {"m3-max", "m3max-128g"}, {"m3max", "m3max-128g"}, {"apple-m3-max", "m3max-128g"},
    {"spark", "dgx-spark"}, {"dgxspark", "dgx-spark"},
};

size_t kvs_plan_hw_count(void) { return sizeof k_hw / sizeof k_hw[0]; }
const kvs_plan_hw *kvs_plan_hw_at(size_t i) { return i < kvs_plan_hw_count() ? &k_hw[i] : NULL; }


/* "24G" -> bytes. binary: K/M/G/T are powers of 1024; else powers of 1000. */
static bool parse_amount(const char *s, size_t n, bool binary, double *out) {
    char tmp[64];
    if (n == 0 || n >= sizeof tmp) return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    double v = strtod(tmp, &end);
    if (end == tmp || !isfinite(v)) return false;
    double base = binary ? 1024.0 : 1000.0, mul = 1;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': mul = base; break;
        case 'm': case 'M': mul = base * base; break;
        case 'g': case 'G': mul = base * base * base; break;
        case 't': case 'T': mul = base * base * base * base; break;
        default: return false;
        }
        end++;
        /* allow "GB", "GiB", "GB/s" style suffixes */
        if (*end == 'i' || *end == 'I') end++;
        if (*end == 'b' || *end == 'B') end++;
        if (!strcmp(end, "/s")) end += 2;
        if (*end) return false;
    }
    *out = v * mul;
    return isfinite(*out);
}

kvs_status kvs_plan_hw_parse(const char *spec, kvs_plan_hw *out) {
    if (!spec || !*spec || !out) return kvs_fail(KVS_ERR_INVALID_ARG, "--hw: empty hardware spec");
    memset(out, 0, sizeof *out);
    if (!strcasecmp(spec, "this") || !strcasecmp(spec, "this-machine") || !strcasecmp(spec, "local")) {
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        if (pages <= 0 || psz <= 0) return kvs_fail(KVS_ERR_UNSUPPORTED, "--hw this: cannot read physical memory size");
        double bw = kvs_measure_read_bandwidth(0, (size_t)256 << 20, 4); /* all CPUs, as bench */
        if (bw <= 0) return kvs_fail(KVS_ERR_NOMEM, "--hw this: cannot allocate the bandwidth probe buffer");
        snprintf(out->name, sizeof out->name, "this machine");
        out->mem_bytes = (double)pages * (double)psz;
        out->bw_bytes_s = bw;
        out->price_hour = 0;
        snprintf(out->note, sizeof out->note, "physical RAM; read bandwidth measured now (all CPUs, sum over 256 MiB, best of 4)");
        return KVS_OK;
    }
    if (!strncasecmp(spec, "custom:", 7) || !strncasecmp(spec, "custom,", 7)) {
        bool has_mem = false, has_bw = false;
        const char *p = spec + 7;
        while (*p) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            const char *eq = memchr(p, '=', len);
            if (!eq) return kvs_fail(KVS_ERR_INVALID_ARG, "--hw custom: expected key=value, got '%.*s'", (int)len, p);
            size_t kl = (size_t)(eq - p), vl = len - kl - 1;
            double v;
            if (kl == 3 && !strncasecmp(p, "mem", 3)) {
                if (!parse_amount(eq + 1, vl, true, &v)) return kvs_fail(KVS_ERR_INVALID_ARG, "--hw custom: bad mem '%.*s' (e.g. mem=24G)", (int)vl, eq + 1);
                out->mem_bytes = v; has_mem = true;
            } else if (kl == 2 && !strncasecmp(p, "bw", 2)) {
                if (!parse_amount(eq + 1, vl, false, &v)) return kvs_fail(KVS_ERR_INVALID_ARG, "--hw custom: bad bw '%.*s' (e.g. bw=1000G for 1000 GB/s)", (int)vl, eq + 1);
                out->bw_bytes_s = v; has_bw = true;
            } else if (kl == 5 && !strncasecmp(p, "price", 5)) {
                if (!parse_amount(eq + 1, vl, false, &v)) return kvs_fail(KVS_ERR_INVALID_ARG, "--hw custom: bad price '%.*s' (USD per hour)", (int)vl, eq + 1);
                out->price_hour = v;
            } else {
                return kvs_fail(KVS_ERR_INVALID_ARG, "--hw custom: unknown key '%.*s' (mem, bw, price)", (int)kl, p);
            }
            if (!e) break;
            p = e + 1;
        }
        if (!has_mem || !has_bw) return kvs_fail(KVS_ERR_INVALID_ARG, "--hw custom: needs mem= and bw= (e.g. custom:mem=24G,bw=1000G,price=0.5)");
        if (!(out->mem_bytes >= 1)) return kvs_fail(KVS_ERR_INVALID_ARG, "--hw custom: impossible memory size %g bytes (must be > 0)", out->mem_bytes);
        if (!(out->bw_bytes_s >= 1)) return kvs_fail(KVS_ERR_INVALID_ARG, "--hw custom: impossible bandwidth %g B/s (must be > 0)", out->bw_bytes_s);
        if (out->price_hour < 0) return kvs_fail(KVS_ERR_INVALID_ARG, "--hw custom: price cannot be negative (%g)", out->price_hour);
        if (out->mem_bytes > 1e18 || out->bw_bytes_s > 1e18) return kvs_fail(KVS_ERR_INVALID_ARG, "--hw custom: memory/bandwidth beyond 1 EB is not plausible");
        snprintf(out->name, sizeof out->name, "custom");
        snprintf(out->note, sizeof out->note, "user-specified");
        return KVS_OK;
    }
    const char *name = spec;
    for (size_t i = 0; i < sizeof k_alias / sizeof k_alias[0]; i++)
        if (!strcasecmp(spec, k_alias[i].alias)) name = k_alias[i].name;
    for (size_t i = 0; i < kvs_plan_hw_count(); i++)
        if (!strcasecmp(name, k_hw[i].name)) { *out = k_hw[i]; return KVS_OK; }
    return kvs_fail(KVS_ERR_INVALID_ARG,
                    "unknown hardware '%s' (known: h100-80g, h200, rtx4090, rtx3090, m3max-128g, dgx-spark, this, "
                    "custom:mem=24G,bw=1000G,price=0.5)", spec);
}
