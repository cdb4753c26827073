/* The engine's C core without Python, for aarch64 under qemu (test_neon.py, bench/aarch64.py).
 *
 *   neon_driver kernels
 *     the NEON kernel table against the scalar one on random packed inputs of awkward sizes;
 *     prints "ok CHECKS" (exit 0) or the first mismatch (exit 1).
 *   neon_driver net NETFILE floats|words scalar|neon run|trace REPS
 *     builds the network of NETFILE (bench/aarch64.py write_net: the tuples module.c takes),
 *     reads uint32 n and n samples (float32 input, or packed uint64 words) from stdin, forces
 *     the ISA, runs the batch REPS times and writes n * classes float32 logits; "trace" then
 *     writes every layer's int32 accumulators (NHWC), as Network.trace fills them.
 * Native byte order throughout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "network.h"

static void die(const char *what) {
    fprintf(stderr, "neon_driver: %s\n", what);
    exit(2);
}

static void *read_exact(FILE *f, size_t bytes) {
    void *p = malloc(bytes + 1);
    if (!p || fread(p, 1, bytes, f) != bytes) die("short read");
    return p;
}

static int64_t read_i64(FILE *f) {
    int64_t v;
    if (fread(&v, sizeof v, 1, f) != 1) die("short read");
    return v;
}

/* an array of exactly `bytes` bytes (its stored length must agree), or NULL if stored empty */
static void *read_array(FILE *f, size_t bytes, int optional) {
    const int64_t len = read_i64(f);
    if (len == 0 && optional) return NULL;
    if (len != (int64_t)bytes) die("array length does not match the layer");
    return read_exact(f, bytes);
}

/* The geometry module.c's parse_layer derives, from the same tuple. */
static void read_layer(FILE *f, hyb_layer *L) {
    int64_t d[8];
    for (int i = 0; i < 8; i++) d[i] = read_i64(f);
    memset(L, 0, sizeof *L);
    L->kind = (int)d[0];
    if (L->kind == HYB_CONV) {
        L->in_c = (size_t)d[1], L->in_h = (size_t)d[2], L->in_w = (size_t)d[3];
        L->in_cw = hyb_words(L->in_c);
        L->n_out = (size_t)d[4], L->kh = L->kw = (size_t)d[5], L->stride = (size_t)d[6];
        L->pad = (size_t)d[7];
        L->out_h = (L->in_h + 2 * L->pad - L->kh) / L->stride + 1;
        L->out_w = (L->in_w + 2 * L->pad - L->kw) / L->stride + 1;
        L->kbits = L->kh * L->kw * L->in_c, L->kwords = L->kh * L->kw * L->in_cw;
        L->in_size = L->in_h * L->in_w * L->in_cw;
        L->out_cw = hyb_words(L->n_out);
        L->out_size = L->out_h * L->out_w * L->out_cw;
    } else {
        L->in_c = (size_t)d[1], L->in_h = L->in_w = 1, L->in_cw = (size_t)d[2];
        L->n_out = (size_t)d[3];
        L->kh = L->kw = L->stride = 1, L->out_h = L->out_w = 1;
        L->out_cw = hyb_words(L->n_out);
        L->kbits = L->in_c, L->kwords = L->in_cw, L->in_size = L->kwords, L->out_size = L->out_cw;
    }
    L->groups = (L->n_out + HYB_GROUP - 1) / HYB_GROUP;
    uint64_t *rows = read_array(f, L->n_out * L->kwords * sizeof(uint64_t), 0);
    if (L->kind == HYB_OUT) {
        L->flip = malloc(L->n_out);
        if (!L->flip) die("out of memory");
        memset(L->flip, 1, L->n_out);
        L->alpha = read_array(f, L->n_out * sizeof(float), 0);
        L->bn_a = read_array(f, L->n_out * sizeof(float), 0);
        L->bn_b = read_array(f, L->n_out * sizeof(float), 0);
    } else {
        int32_t *thr = read_array(f, L->n_out * sizeof(int32_t), 1);
        if (thr) { /* padded to whole groups with INT32_MAX, as module.c does */
            L->thr = malloc(L->groups * HYB_GROUP * sizeof(int32_t));
            if (!L->thr) die("out of memory");
            for (size_t c = 0; c < L->groups * HYB_GROUP; c++) L->thr[c] = c < L->n_out ? thr[c] : INT32_MAX;
            free(thr);
        }
        L->flip = read_array(f, L->n_out, 0);
    }
    if (hyb_layer_prepare(L, rows) < 0) die("out of memory");
    free(rows);
}

static void read_net(const char *path, hyb_net *net) {
    FILE *f = fopen(path, "rb");
    char magic[8];
    if (!f || fread(magic, 1, 8, f) != 8 || memcmp(magic, "HYBNET01", 8) != 0) die("not a net file");
    memset(net, 0, sizeof *net);
    net->image = (int)read_i64(f);
    net->in_c = (size_t)read_i64(f), net->in_h = (size_t)read_i64(f), net->in_w = (size_t)read_i64(f);
    const int64_t shift_bits = read_i64(f);
    uint32_t bits32 = (uint32_t)shift_bits;
    memcpy(&net->in_shift, &bits32, sizeof bits32);
    net->in_size = net->in_h * net->in_w * hyb_words(net->in_c);
    net->nlayers = (size_t)read_i64(f);
    net->layers = calloc(net->nlayers, sizeof(hyb_layer));
    if (!net->layers) die("out of memory");
    for (size_t l = 0; l < net->nlayers; l++) read_layer(f, &net->layers[l]);
    fclose(f);
    if (hyb_net_prepare_patch(net) < 0) die("out of memory");
}

static int run_net(int argc, char **argv) {
    if (argc != 7) die("usage: net NETFILE floats|words scalar|neon run|trace REPS");
    hyb_net net;
    read_net(argv[2], &net);
    const int words = strcmp(argv[3], "words") == 0;
    const int isa = strcmp(argv[4], "neon") == 0 ? HYB_ISA_NEON : HYB_ISA_SCALAR;
    const int trace = strcmp(argv[5], "trace") == 0;
    const long reps = strtol(argv[6], NULL, 10);
    if (hyb_set_isa(isa) < 0 || strcmp(hyb_active()->name, argv[4]) != 0) die("cannot force the ISA");
    uint32_t n;
    if (fread(&n, sizeof n, 1, stdin) != 1) die("short read");
    const size_t per = words ? net.in_size * sizeof(uint64_t)
                             : net.in_c * net.in_h * net.in_w * sizeof(float);
    void *x = read_exact(stdin, (size_t)n * per);
    const hyb_layer *last = &net.layers[net.nlayers - 1];
    float *logits = malloc((size_t)n * last->n_out * sizeof(float) + 1);
    if (!logits) die("out of memory");
    const int kind = words ? HYB_IN_WORDS : HYB_IN_FLOAT;
    for (long r = 0; r < reps; r++)
        if (hyb_net_run(&net, x, kind, n, logits, HYB_OUT_LOGITS, 1) != HYB_OK) die("run failed");
    fwrite(logits, sizeof(float), (size_t)n * last->n_out, stdout);
    if (trace) {
        int32_t **outs = calloc(net.nlayers, sizeof(int32_t *));
        size_t *counts = calloc(net.nlayers, sizeof(size_t));
        if (!outs || !counts) die("out of memory");
        for (size_t l = 0; l < net.nlayers; l++) {
            const hyb_layer *L = &net.layers[l];
            counts[l] = (size_t)n * L->out_h * L->out_w * L->n_out;
            if (!(outs[l] = malloc(counts[l] * sizeof(int32_t) + 1))) die("out of memory");
        }
        if (hyb_net_trace(&net, x, kind, n, outs, 1) != HYB_OK) die("trace failed");
        for (size_t l = 0; l < net.nlayers; l++) fwrite(outs[l], sizeof(int32_t), counts[l], stdout);
    }
    hyb_net_free(&net);
    return fflush(stdout) != 0;
}

/* ---- kernel tables: NEON against scalar -------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t next(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

/* random words, some all-zero or all-ones (the +1 padding, saturated counts) */
static uint64_t word(void) {
    const uint64_t r = next();
    return (r & 7) == 0 ? 0 : (r & 7) == 1 ? ~(uint64_t)0 : next();
}

static long checks;

#define EXPECT(cond, ...)                                                                         \
    do {                                                                                          \
        checks++;                                                                                 \
        if (!(cond)) {                                                                            \
            printf("mismatch: " __VA_ARGS__);                                                     \
            printf("\n");                                                                         \
            return 1;                                                                             \
        }                                                                                         \
    } while (0)

static int check_microkernels(const hyb_kernels *S, const hyb_kernels *N) {
    uint64_t a[HYB_KBLOCK], w[HYB_KBLOCK * HYB_GROUP];
    const uint64_t *ptrs[HYB_KBLOCK];
    int32_t thr[HYB_GROUP];
    for (int nk = 1; nk <= HYB_KBLOCK; nk++)
        for (int trial = 0; trial < 8; trial++) {
            for (int k = 0; k < nk; k++) a[k] = word();
            for (int k = 0; k < nk; k++) ptrs[k] = &a[nk - 1 - k]; /* indirect: another order */
            for (int i = 0; i < nk * HYB_GROUP; i++) w[i] = word();
            for (int add = 0; add < 2; add++) {
                uint32_t s[HYB_GROUP], v[HYB_GROUP];
                for (int c = 0; c < HYB_GROUP; c++) s[c] = v[c] = (uint32_t)(next() % 100000);
                S->mk_contig(a, nk, w, s, add);
                N->mk_contig(a, nk, w, v, add);
                EXPECT(memcmp(s, v, sizeof s) == 0, "mk_contig nk=%d add=%d", nk, add);
                S->mk_ind(ptrs, nk, w, s, add);
                N->mk_ind(ptrs, nk, w, v, add);
                EXPECT(memcmp(s, v, sizeof s) == 0, "mk_ind nk=%d add=%d", nk, add);
            }
            /* fused kernels against scalar microkernel + compare; thresholds around the pops,
             * the extremes -1 and kbits, and the group padding INT32_MAX */
            uint32_t pop[HYB_GROUP];
            S->mk_contig(a, nk, w, pop, 0);
            for (int c = 0; c < HYB_GROUP; c++) {
                const uint64_t r = next() % 6;
                thr[c] = r == 0 ? -1 : r == 1 ? 64 * nk : r == 2 ? INT32_MAX
                                                           : (int32_t)pop[c] + (int32_t)(r - 4);
            }
            EXPECT(N->mk_contig_bits(a, nk, w, thr) == S->thr_bits(pop, thr), "mk_contig_bits nk=%d", nk);
            S->mk_ind(ptrs, nk, w, pop, 0);
            EXPECT(N->mk_ind_bits(ptrs, nk, w, thr) == S->thr_bits(pop, thr), "mk_ind_bits nk=%d", nk);
        }
    /* thr_bits on counts past 16 bits (long dot products accumulate over K blocks) */
    for (int trial = 0; trial < 2000; trial++) {
        uint32_t pop[HYB_GROUP];
        int32_t t[HYB_GROUP];
        for (int c = 0; c < HYB_GROUP; c++) {
            pop[c] = (uint32_t)(next() % ((uint64_t)1 << (trial % 31)));
            const uint64_t r = next() % 5;
            t[c] = r == 0 ? -1 : r == 1 ? INT32_MAX : (int32_t)pop[c] + (int32_t)(r - 3);
        }
        EXPECT(N->thr_bits(pop, t) == S->thr_bits(pop, t), "thr_bits trial %d", trial);
    }
    return 0;
}

static float value(void) {
    const uint64_t r = next() % 16;
    const float specials[6] = {0.0f, -0.0f, 1e-30f, -1e-30f, __builtin_inff(), -__builtin_inff()};
    if (r < 6) return specials[r];
    return (float)((int64_t)(next() % 2001) - 1000) / 7.0f;
}

static int check_packing(const hyb_kernels *S, const hyb_kernels *N) {
    const size_t widths[] = {1, 5, 63, 64, 65, 127, 128, 129, 200, 255, 256, 1000};
    for (size_t i = 0; i < sizeof widths / sizeof *widths; i++) {
        const size_t k = widths[i], rows = 3, kw = hyb_words(k);
        float *x = malloc(rows * k * sizeof(float));
        uint64_t *s = calloc(rows * kw, sizeof(uint64_t)), *v = calloc(rows * kw, sizeof(uint64_t));
        if (!x || !s || !v) die("out of memory");
        for (size_t j = 0; j < rows * k; j++) x[j] = value();
        const int ns = S->pack_rows(x, rows, k, s), nv = N->pack_rows(x, rows, k, v);
        EXPECT(ns == 0 && nv == 0 && memcmp(s, v, rows * kw * sizeof(uint64_t)) == 0, "pack_rows k=%zu", k);
        for (size_t at = 0; at < rows * k; at += k / 2 + 1) { /* a NaN anywhere is reported */
            const float keep = x[at];
            x[at] = __builtin_nanf("");
            EXPECT(N->pack_rows(x, rows, k, v) != 0, "pack_rows NaN at %zu, k=%zu", at, k);
            x[at] = keep;
        }
        free(x), free(s), free(v);
    }
    return 0;
}

static int run_kernels(void) {
    if (hyb_set_isa(HYB_ISA_NEON) < 0) die("this build lacks the NEON kernels");
    const hyb_kernels *N = hyb_active(), *S = &hyb_kernels_scalar;
    if (strcmp(N->name, "neon") != 0 || N->split || hyb_detect_isa() != HYB_ISA_NEON)
        die("dispatch does not pick the NEON table");
    if (check_microkernels(S, N) || check_packing(S, N)) return 1;
    printf("ok %ld\n", checks);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "kernels") == 0) return run_kernels();
    if (argc >= 2 && strcmp(argv[1], "net") == 0) return run_net(argc, argv);
    die("usage: neon_driver kernels | net NETFILE floats|words scalar|neon run|trace REPS");
    return 2;
}
