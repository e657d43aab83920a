/* Planner output: text tables, JSON, CSV and a hand-written SVG plot of KV
 * bytes vs context. Everything goes to the FILE* the caller passes. */
#include <math.h>
#include <string.h>

#include "plan/plan.h"

/* ---- helpers ------------------------------------------------------------- */

static void fmt_rate(double v, char *buf, size_t cap) {
    if (v <= 0) snprintf(buf, cap, "-");
    else if (v >= 100) snprintf(buf, cap, "%.0f", v);
    else if (v >= 10) snprintf(buf, cap, "%.1f", v);
    else snprintf(buf, cap, "%.2f", v);
}

static void fmt_count(uint64_t v, char *buf, size_t cap) {
    if (v == KVS_PLAN_UNBOUNDED) snprintf(buf, cap, "unbounded");
    else snprintf(buf, cap, "%llu", (unsigned long long)v);
}

static void fmt_params(double p, char *buf, size_t cap) {
    if (p >= 1e12) snprintf(buf, cap, "%.2fT", p / 1e12);
    else if (p >= 1e9) snprintf(buf, cap, "%.2fB", p / 1e9);
    else snprintf(buf, cap, "%.1fM", p / 1e6);
}

/* Groups of layers with an identical scheme description. */
typedef struct group {
    char desc[128];
    uint32_t count;
    uint32_t first;     /* a representative layer */
    char ranges[96];
} group;

static void append_range(char *buf, size_t cap, uint32_t a, uint32_t b) {
    size_t len = strlen(buf);
    if (len + 24 >= cap) {
        if (len + 4 < cap && strcmp(buf + (len >= 3 ? len - 3 : 0), "...") != 0) snprintf(buf + len, cap - len, "...");
        return;
    }
    if (a == b) snprintf(buf + len, cap - len, "%s%u", len ? "," : "", a);
    else snprintf(buf + len, cap - len, "%s%u-%u", len ? "," : "", a, b);
}

static size_t group_layers(const kvs_plan_model *m, group *g, size_t cap) {
    size_t n = 0;
    for (uint32_t i = 0; i < m->n_layer; i++) {
        char d[128];
        kvs_kv_scheme_describe(&m->layers[i].kv, d, sizeof d);
        size_t j;
        for (j = 0; j < n; j++) if (!strcmp(g[j].desc, d)) break;
        if (j == n) {
            if (n == cap) continue;
            memset(&g[n], 0, sizeof g[n]);
            snprintf(g[n].desc, sizeof g[n].desc, "%s", d);
            g[n].first = i;
            n++;
        }
        g[j].count++;
    }
    /* ranges */
    for (size_t j = 0; j < n; j++) {
        int64_t run_start = -1, prev = -1;
        for (uint32_t i = 0; i < m->n_layer; i++) {
            char d[128];
            kvs_kv_scheme_describe(&m->layers[i].kv, d, sizeof d);
            if (strcmp(d, g[j].desc)) continue;
            if (run_start >= 0 && (int64_t)i == prev + 1) { prev = i; continue; }
            if (run_start >= 0) append_range(g[j].ranges, sizeof g[j].ranges, (uint32_t)run_start, (uint32_t)prev);
            run_start = prev = i;
        }
        if (run_start >= 0) append_range(g[j].ranges, sizeof g[j].ranges, (uint32_t)run_start, (uint32_t)prev);
    }
    return n;
}

/* ---- text ---------------------------------------------------------------- */

void kvs_plan_render_text(FILE *f, const kvs_plan_result *rs, size_t n, uint64_t bctx) {
    if (!f || !rs || n == 0) return;
    const kvs_plan_result *r = &rs[0];
    const kvs_plan_model *m = r->model;
    char a[64], b[64], c[64], d[64], e[64], g_[64];
    fmt_params(m->params_total, a, sizeof a);
    fmt_params(m->params_active, b, sizeof b);
    kvs_plan_fmt_bytes(m->weight_bytes, c, sizeof c);
    kvs_plan_fmt_bytes(m->active_weight_bytes, d, sizeof d);
    fprintf(f, "model    %s  (%u layers, trained ctx %u)\n", m->name, m->n_layer, m->n_ctx_train);
    fprintf(f, "source   %s\n", m->source);
    fprintf(f, "weights  %s params (%s active/token), %s: %s (%s read per token)\n", a, b,
            m->weight_format[0] ? m->weight_format : "?", c, d);
    if (m->repack_bytes > 0) {
        kvs_plan_fmt_bytes(m->repack_bytes, c, sizeof c);
        fprintf(f, "         + %s repacked at load (interleaved copies the matmul reads instead)\n", c);
    }
    kvs_plan_fmt_bytes(r->kv_fixed, e, sizeof e);
    fprintf(f, "KV       [%s] %.0f bytes/token growing + %s fixed, per sequence\n", r->label, r->kv_per_token, e);

    group gs[64];
    size_t ng = group_layers(m, gs, 64);
    kvs_plan_fmt_ctx(bctx, a, sizeof a);
    fprintf(f, "\nper-layer KV (one sequence at %s):\n", a);
    fprintf(f, "  %-5s %-46s %9s %11s %11s  %s\n", "count", "scheme", "B/token", "per layer", "all", "layers");
    for (size_t j = 0; j < ng; j++) {
        const kvs_kv_scheme *s = &m->layers[gs[j].first].kv;
        uint64_t per = kvs_kv_scheme_bytes(s, bctx);
        kvs_plan_fmt_bytes((double)per, c, sizeof c);
        kvs_plan_fmt_bytes((double)per * gs[j].count, d, sizeof d);
        fprintf(f, "  %-5u %-46s %9.1f %11s %11s  %s\n", gs[j].count, gs[j].desc, kvs_kv_scheme_bytes_per_token(s), c,
                d, gs[j].ranges);
    }

    fprintf(f, "\n");
    if (r->has_hw) {
        if (r->hw.mem_bytes > 0) {
            kvs_plan_fmt_bytes(r->hw.mem_bytes, a, sizeof a);
            fprintf(f, "hardware %s: %s, %.0f GB/s", r->hw.name, a, r->hw.bw_bytes_s / 1e9);
            if (r->hw.price_hour > 0) fprintf(f, ", $%.2f/h", r->hw.price_hour);
            fprintf(f, "  (%s)\n", r->hw.note);
        }
        if (r->hw.kv_budget > 0) {
            kvs_plan_fmt_bytes(r->hw.kv_budget, a, sizeof a);
            fprintf(f, "KV budget %s (seqs fit and max context count it alone)\n", a);
            kvs_plan_fmt_ctx(r->max_ctx, a, sizeof a);
            if (r->max_ctx != KVS_PLAN_UNBOUNDED && r->max_ctx >= 1024)
                snprintf(a, sizeof a, "%llu tokens (%.1fK)", (unsigned long long)r->max_ctx, r->max_ctx / 1024.0);
            fprintf(f, "max context in the budget (batch %u): %s\n", r->batch, a);
        } else if (!r->weights_fit) {
            kvs_plan_fmt_bytes(m->weight_bytes + m->repack_bytes, a, sizeof a);
            kvs_plan_fmt_bytes(r->hw.mem_bytes, b, sizeof b);
            fprintf(f, "DOES NOT FIT: weights need %s, memory is %s\n", a, b);
        } else {
            kvs_plan_fmt_ctx(r->max_ctx, a, sizeof a);
            if (r->max_ctx != KVS_PLAN_UNBOUNDED && r->max_ctx >= 1024)
                snprintf(a, sizeof a, "%llu tokens (%.1fK)", (unsigned long long)r->max_ctx, r->max_ctx / 1024.0);
            fprintf(f, "max context after weights (batch %u): %s\n", r->batch, a);
        }
    }
    fprintf(f, "\n%-8s %12s %14s %12s", "context", "KV/seq", "KV x batch", "KV read/tok");
    if (r->has_hw) fprintf(f, " %5s %11s %11s %12s %10s", "fits", "seqs fit", "tok/s/seq", "tok/s total", "$/1M tok");
    fprintf(f, "\n");
    for (size_t i = 0; i < r->n_points; i++) {
        const kvs_plan_point *p = &r->points[i];
        kvs_plan_fmt_ctx(p->ctx, a, sizeof a);
        kvs_plan_fmt_bytes((double)p->kv_seq, b, sizeof b);
        kvs_plan_fmt_bytes((double)p->kv_batch, c, sizeof c);
        kvs_plan_fmt_bytes((double)p->kv_read, d, sizeof d);
        fprintf(f, "%-8s %12s %14s %12s", a, b, c, d);
        if (r->has_hw) {
            fmt_count(p->concurrency, e, sizeof e);
            fmt_rate(p->tok_s_seq, g_, sizeof g_);
            char t[32], u[32];
            fmt_rate(p->tok_s_total, t, sizeof t);
            if (p->usd_per_mtok >= 0) snprintf(u, sizeof u, "%.3f", p->usd_per_mtok);
            else snprintf(u, sizeof u, "-");
            fprintf(f, " %5s %11s %11s %12s %10s", p->fits ? "yes" : "NO", e, g_, t, u);
        }
        fprintf(f, "\n");
    }
    if (r->has_hw)
        fprintf(f, "(tok/s = bandwidth / (active weight bytes + batch x KV bytes read per token): an upper bound)\n");

    if (n > 1) {
        fprintf(f, "\ncompare (one sequence):\n  %-28s %10s %12s", "scheme", "B/token", "fixed");
        for (size_t i = 0; i < r->n_points; i++) {
            kvs_plan_fmt_ctx(r->points[i].ctx, a, sizeof a);
            char h[80];
            snprintf(h, sizeof h, "KV@%s", a);
            fprintf(f, " %12s", h);
        }
        if (r->has_hw) fprintf(f, " %12s", "max ctx");
        fprintf(f, " %8s\n", "vs first");
        for (size_t k = 0; k < n; k++) {
            const kvs_plan_result *q = &rs[k];
            kvs_plan_fmt_bytes(q->kv_fixed, b, sizeof b);
            fprintf(f, "  %-28s %10.1f %12s", q->label, q->kv_per_token, b);
            for (size_t i = 0; i < q->n_points; i++) {
                kvs_plan_fmt_bytes((double)q->points[i].kv_seq, c, sizeof c);
                fprintf(f, " %12s", c);
            }
            if (q->has_hw) {
                kvs_plan_fmt_ctx(q->max_ctx, d, sizeof d);
                if (!q->weights_fit) snprintf(d, sizeof d, "no fit");
                fprintf(f, " %12s", d);
            }
            double base = q->n_points ? (double)rs[0].points[q->n_points - 1].kv_seq : 0;
            double mine = q->n_points ? (double)q->points[q->n_points - 1].kv_seq : 0;
            if (base > 0) fprintf(f, " %7.1f%%", 100.0 * mine / base);
            fprintf(f, "\n");
        }
    }
}

/* ---- JSON ---------------------------------------------------------------- */

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v) {
    if (!isfinite(v)) fprintf(f, "null");
    else if (v == floor(v) && fabs(v) < 9e15) fprintf(f, "%.0f", v);
    else fprintf(f, "%.6g", v);
}

void kvs_plan_render_json(FILE *f, const kvs_plan_result *rs, size_t n, uint64_t bctx) {
    if (!f || !rs || n == 0) return;
    const kvs_plan_model *m = rs[0].model;
    fprintf(f, "{\n  \"model\": {\"name\": ");
    json_str(f, m->name);
    fprintf(f, ", \"arch\": ");
    json_str(f, m->arch);
    fprintf(f, ", \"source\": ");
    json_str(f, m->source);
    fprintf(f, ", \"n_layer\": %u, \"n_ctx_train\": %u, \"params_total\": ", m->n_layer, m->n_ctx_train);
    json_num(f, m->params_total);
    fprintf(f, ", \"params_active\": ");
    json_num(f, m->params_active);
    fprintf(f, ", \"weight_bytes\": ");
    json_num(f, floor(m->weight_bytes));
    fprintf(f, ", \"active_weight_bytes\": ");
    json_num(f, floor(m->active_weight_bytes));
    fprintf(f, ", \"repack_bytes\": ");
    json_num(f, floor(m->repack_bytes));
    fprintf(f, ", \"weight_format\": ");
    json_str(f, m->weight_format);
    fprintf(f, "},\n");
    if (rs[0].has_hw) {
        fprintf(f, "  \"hardware\": {\"name\": ");
        json_str(f, rs[0].hw.name);
        fprintf(f, ", \"mem_bytes\": ");
        json_num(f, rs[0].hw.mem_bytes);
        fprintf(f, ", \"bw_bytes_s\": ");
        json_num(f, rs[0].hw.bw_bytes_s);
        fprintf(f, ", \"price_hour\": ");
        json_num(f, rs[0].hw.price_hour);
        fprintf(f, ", \"kv_budget\": ");
        json_num(f, rs[0].hw.kv_budget);
        fprintf(f, "},\n");
    }
    fprintf(f, "  \"batch\": %u,\n  \"breakdown_ctx\": %llu,\n  \"schemes\": [\n", rs[0].batch,
            (unsigned long long)bctx);
    for (size_t k = 0; k < n; k++) {
        const kvs_plan_result *r = &rs[k];
        fprintf(f, "    {\"label\": ");
        json_str(f, r->label);
        fprintf(f, ", \"kv_bytes_per_token\": ");
        json_num(f, r->kv_per_token);
        fprintf(f, ", \"kv_fixed_bytes\": ");
        json_num(f, r->kv_fixed);
        if (r->has_hw) {
            fprintf(f, ", \"weights_fit\": %s, \"max_ctx\": ", r->weights_fit ? "true" : "false");
            if (r->max_ctx == KVS_PLAN_UNBOUNDED) fprintf(f, "null");
            else fprintf(f, "%llu", (unsigned long long)r->max_ctx);
        }
        fprintf(f, ",\n     \"layers\": [");
        for (uint32_t i = 0; i < r->model->n_layer; i++) {
            char d[128];
            const kvs_kv_scheme *s = &r->model->layers[i].kv;
            kvs_kv_scheme_describe(s, d, sizeof d);
            fprintf(f, "%s\n       {\"layer\": %u, \"scheme\": ", i ? "," : "", i);
            json_str(f, d);
            fprintf(f, ", \"bytes_per_token\": ");
            json_num(f, kvs_kv_scheme_bytes_per_token(s));
            fprintf(f, ", \"bytes_at_breakdown_ctx\": %llu}", (unsigned long long)kvs_kv_scheme_bytes(s, bctx));
        }
        fprintf(f, "],\n     \"points\": [");
        for (size_t i = 0; i < r->n_points; i++) {
            const kvs_plan_point *p = &r->points[i];
            fprintf(f, "%s\n       {\"ctx\": %llu, \"kv_bytes_seq\": %llu, \"kv_bytes_batch\": %llu, \"kv_read_bytes\": %llu",
                    i ? "," : "", (unsigned long long)p->ctx, (unsigned long long)p->kv_seq,
                    (unsigned long long)p->kv_batch, (unsigned long long)p->kv_read);
            if (r->has_hw) {
                fprintf(f, ", \"fits\": %s, \"concurrency\": ", p->fits ? "true" : "false");
                if (p->concurrency == KVS_PLAN_UNBOUNDED) fprintf(f, "null");
                else fprintf(f, "%llu", (unsigned long long)p->concurrency);
                fprintf(f, ", \"tok_s_seq\": ");
                json_num(f, p->tok_s_seq);
                fprintf(f, ", \"tok_s_total\": ");
                json_num(f, p->tok_s_total);
                fprintf(f, ", \"usd_per_mtok\": ");
                if (p->usd_per_mtok >= 0) json_num(f, p->usd_per_mtok);
                else fprintf(f, "null");
            }
            fprintf(f, "}");
        }
        fprintf(f, "]}%s\n", k + 1 < n ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
}

/* ---- CSV ----------------------------------------------------------------- */

static void csv_field(FILE *f, const char *s) {
    bool quote = strpbrk(s, ",\"\n") != NULL;
    if (!quote) { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) { if (*s == '"') fputc('"', f); fputc(*s, f); }
    fputc('"', f);
}

void kvs_plan_render_csv(FILE *f, const kvs_plan_result *rs, size_t n) {
    if (!f || !rs) return;
    fprintf(f, "model,scheme,batch,ctx,kv_bytes_per_token,kv_fixed_bytes,kv_bytes_seq,kv_bytes_batch,kv_read_bytes,"
               "fits,concurrency,tok_s_seq,tok_s_total,usd_per_mtok,max_ctx\n");
    for (size_t k = 0; k < n; k++) {
        const kvs_plan_result *r = &rs[k];
        for (size_t i = 0; i < r->n_points; i++) {
            const kvs_plan_point *p = &r->points[i];
            csv_field(f, r->model->name);
            fputc(',', f);
            csv_field(f, r->label);
            fprintf(f, ",%u,%llu,%.1f,%.0f,%llu,%llu,%llu,", r->batch, (unsigned long long)p->ctx, r->kv_per_token,
                    r->kv_fixed, (unsigned long long)p->kv_seq, (unsigned long long)p->kv_batch,
                    (unsigned long long)p->kv_read);
            if (r->has_hw) {
                fprintf(f, "%d,", p->fits ? 1 : 0);
                if (p->concurrency != KVS_PLAN_UNBOUNDED) fprintf(f, "%llu", (unsigned long long)p->concurrency);
                fprintf(f, ",%.3f,%.3f,", p->tok_s_seq, p->tok_s_total);
                if (p->usd_per_mtok >= 0) fprintf(f, "%.6f", p->usd_per_mtok);
                fputc(',', f);
                if (r->max_ctx != KVS_PLAN_UNBOUNDED) fprintf(f, "%llu", (unsigned long long)r->max_ctx);
            } else {
                fprintf(f, ",,,,,");
            }
            fputc('\n', f);
        }
    }
}

/* ---- SVG ----------------------------------------------------------------- */

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

void kvs_plan_render_svg(FILE *f, const kvs_plan_result *rs, size_t n, uint64_t max_ctx) {
    if (!f || !rs || n == 0) return;
    static const char *colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    const double W = 860, H = 520, L = 90, R = 30, T = 50, B = 60;
    const double pw = W - L - R, ph = H - T - B;
    if (max_ctx < 4096) max_ctx = 4096;
    double x0 = log2(1024.0), x1 = log2((double)max_ctx);
    enum { NS = 96 };
    double ymax = 0;
    for (size_t k = 0; k < n; k++) {
        double v = (double)kvs_plan_kv_bytes(rs[k].model, max_ctx);
        if (v > ymax) ymax = v;
    }
    const double gib = 1073741824.0;
    const char *unit = "GiB";
    double scale = gib;
    if (ymax < gib) { unit = "MiB"; scale = 1048576.0; }
    double ytop = ymax / scale;
    /* nice tick step */
    double raw = ytop / 5, mag = pow(10, floor(log10(raw > 0 ? raw : 1))), step = mag;
    if (raw / mag > 5) step = 10 * mag; else if (raw / mag > 2) step = 5 * mag; else if (raw / mag > 1) step = 2 * mag;
    if (step <= 0) step = 1;
    ytop = ceil(ytop / step) * step;
    if (ytop <= 0) ytop = step;

    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
               "font-family=\"sans-serif\" font-size=\"13\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"28\" font-size=\"17\" font-weight=\"bold\">KV cache per sequence: ", L);
    xml_text(f, rs[0].model->name);
    fprintf(f, "</text>\n");
    /* grid + y ticks */
    for (double y = 0; y <= ytop + step * 0.01; y += step) {
        double py = T + ph - ph * y / ytop;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, py, L + pw, py);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 8, py + 4, y);
    }
    /* x ticks at powers of two */
    for (int e = (int)ceil(x0); e <= (int)floor(x1); e++) {
        double px = L + pw * (e - x0) / (x1 - x0);
        char lab[32];
        kvs_plan_fmt_ctx((uint64_t)1 << e, lab, sizeof lab);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n", px, T, px, T + ph);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", px, T + ph + 18, lab);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", L, T, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">context length (tokens, log scale)</text>\n",
            L + pw / 2, H - 16);
    fprintf(f, "<text x=\"20\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 20 %.1f)\">KV bytes (%s)</text>\n",
            T + ph / 2, T + ph / 2, unit);
    for (size_t k = 0; k < n; k++) {
        const char *col = colors[k % 10];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2.5\" points=\"", col);
        for (int i = 0; i <= NS; i++) {
            double lx = x0 + (x1 - x0) * i / NS;
            uint64_t ctx = (uint64_t)llround(pow(2.0, lx));
            double v = (double)kvs_plan_kv_bytes(rs[k].model, ctx) / scale;
            double px = L + pw * (lx - x0) / (x1 - x0), py = T + ph - ph * v / ytop;
            fprintf(f, "%.1f,%.1f ", px, py);
        }
        fprintf(f, "\"/>\n");
        /* legend */
        double ly = T + 18 + 20 * (double)k;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"18\" height=\"4\" fill=\"%s\"/>\n", L + 14, ly - 6, col);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", L + 38, ly);
        xml_text(f, rs[k].label);
        char b[48];
        kvs_plan_fmt_bytes((double)kvs_plan_kv_bytes(rs[k].model, max_ctx), b, sizeof b);
        char c[32];
        kvs_plan_fmt_ctx(max_ctx, c, sizeof c);
        fprintf(f, " — %s at %s</text>\n", b, c);
    }
    fprintf(f, "</svg>\n");
}
