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
 *   neon_driver graph PROGFILE scalar|neon run|trace|replay REPS MASK
 *     runs an engine graph as the fused plan of hybnn/engine/graph.py does (bench/aarch64.py
 *     write_graph: one record per compiled call: binary layer, epilogue, float convolution,
 *     pooling, and the float ops numpy runs), on uint32 n and n float32 images from stdin.
 *     Each step of a part in MASK (bit p: part p) runs REPS times in a row, the others once (a
 *     step only writes its own outputs, so repeating it changes nothing). "run" writes the
 *     output value; "trace" then every step's outputs in order; "replay" runs each step once
 *     on the values that stdin gives for its inputs (after n, step by step), writes its
 *     outputs after it (every kernel on the x86 engine's own inputs), then the output value.
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

/* ---- graphs ------------------------------------------------------------------------------- */

enum { V_FLOAT = 0, V_BITS = 1, V_ACC = 2 }; /* NCHW float32, NHWC words, NHWC int32 */
enum { S_BIN = 0, S_EW = 1, S_CONV = 2, S_POOL = 3, S_DENSE = 4, S_AFFINE = 5, S_PRELU = 6,
       S_ADD = 7, S_MEAN = 8, S_COPY = 9 };

typedef struct {
    int kind;
    size_t c, h, w, bytes; /* bytes per sample */
    void *data;
} g_value;

typedef struct {
    int kind, part;
    size_t nfeed, nout, nints, nblobs;
    int64_t *feed, *out, *ints;
    void **blobs; /* NULL where stored empty */
    hyb_net net;  /* S_BIN: one layer */
} g_step;

typedef struct {
    size_t nvalues, nsteps;
    int64_t output;
    g_value *values;
    g_step *steps;
} g_prog;

static int64_t *read_ids(FILE *f, size_t *count) {
    *count = (size_t)read_i64(f);
    int64_t *ids = read_exact(f, *count * sizeof(int64_t));
    return ids;
}

static void read_prog(const char *path, g_prog *g) {
    FILE *f = fopen(path, "rb");
    char magic[8];
    if (!f || fread(magic, 1, 8, f) != 8 || memcmp(magic, "HYBGRF01", 8) != 0) die("not a graph file");
    g->nvalues = (size_t)read_i64(f);
    g->output = read_i64(f);
    g->values = calloc(g->nvalues, sizeof(g_value));
    if (!g->values) die("out of memory");
    for (size_t v = 0; v < g->nvalues; v++) {
        g_value *V = &g->values[v];
        V->kind = (int)read_i64(f);
        V->c = (size_t)read_i64(f), V->h = (size_t)read_i64(f), V->w = (size_t)read_i64(f);
        V->bytes = V->kind == V_BITS ? V->h * V->w * hyb_words(V->c) * sizeof(uint64_t)
                                     : V->c * V->h * V->w * 4;
    }
    g->nsteps = (size_t)read_i64(f);
    g->steps = calloc(g->nsteps, sizeof(g_step));
    if (!g->steps) die("out of memory");
    for (size_t s = 0; s < g->nsteps; s++) {
        g_step *S = &g->steps[s];
        S->kind = (int)read_i64(f), S->part = (int)read_i64(f);
        S->feed = read_ids(f, &S->nfeed);
        S->out = read_ids(f, &S->nout);
        S->ints = read_ids(f, &S->nints);
        if (S->kind == S_BIN) { /* the layer record of write_net, on the input value's shape */
            const g_value *in = &g->values[S->ints[0]];
            memset(&S->net, 0, sizeof S->net);
            S->net.image = 1, S->net.in_c = in->c, S->net.in_h = in->h, S->net.in_w = in->w;
            S->net.in_size = in->h * in->w * hyb_words(in->c);
            S->net.nlayers = 1;
            if (!(S->net.layers = calloc(1, sizeof(hyb_layer)))) die("out of memory");
            read_layer(f, &S->net.layers[0]);
            if (hyb_net_prepare_patch(&S->net) < 0) die("out of memory");
        }
        S->nblobs = (size_t)read_i64(f);
        S->blobs = calloc(S->nblobs + 1, sizeof(void *));
        if (!S->blobs) die("out of memory");
        for (size_t b = 0; b < S->nblobs; b++) {
            const int64_t len = read_i64(f);
            S->blobs[b] = len ? read_exact(f, (size_t)len) : NULL;
        }
    }
    fclose(f);
}

static void *val(const g_prog *g, int64_t id) { return id < 0 ? NULL : g->values[id].data; }

/* out[i][c][y][x] = alpha[c] * float(acc[i][y][x][c]), as graph.py's numpy multiply rounds */
static void scale_acc(const int32_t *acc, const float *alpha, const g_value *v, size_t n, float *out) {
    const size_t hw = v->h * v->w;
    for (size_t i = 0; i < n; i++)
        for (size_t c = 0; c < v->c; c++)
            for (size_t p = 0; p < hw; p++) out[(i * v->c + c) * hw + p] = (float)acc[(i * hw + p) * v->c + c] * alpha[c];
}

static void run_step(const g_prog *g, const g_step *S, size_t n) {
    const int64_t *a = S->ints;
    void *const *b = S->blobs;
    const g_value *in = &g->values[a[0]];
    switch (S->kind) {
    case S_BIN: { /* ints: in, out, mode (0 words, 1 int32 dot products, 2 alpha * d) */
        const g_value *out = &g->values[a[1]];
        const int mode = (int)a[2];
        void *dst = mode == 2 ? malloc(n * out->c * out->h * out->w * 4 + 1) : val(g, a[1]);
        if (!dst) die("out of memory");
        if (hyb_net_run(&S->net, val(g, a[0]), HYB_IN_WORDS, n, dst, mode ? HYB_OUT_ACC : HYB_OUT_WORDS, 1))
            die("binary layer failed");
        if (mode == 2) scale_acc(dst, b[0], out, n, val(g, a[1])), free(dst);
        break;
    }
    case S_EW: { /* ints: source (int32 dot products or floats), out, bits, nsteps, then (op,
                  * other) per step; blobs: alpha, shift, then (a, b) per step */
        hyb_ew e;
        memset(&e, 0, sizeof e);
        e.n = n, e.c = in->c, e.hw = in->h * in->w;
        if (in->kind == V_ACC) e.acc = val(g, a[0]), e.alpha = b[0];
        else e.x = val(g, a[0]);
        e.out = val(g, a[1]), e.bits = val(g, a[2]), e.shift = b[1];
        e.nsteps = (int)a[3];
        for (int k = 0; k < e.nsteps; k++) {
            e.steps[k].op = (int)a[4 + 2 * k];
            e.steps[k].other = val(g, a[5 + 2 * k]);
            e.steps[k].a = b[2 + 2 * k], e.steps[k].b = b[3 + 2 * k];
        }
        if (hyb_epilogue(&e, 1)) die("epilogue failed (NaN or out of memory)");
        break;
    }
    case S_CONV: { /* ints: in, out, k, s, p; blobs: weight, bias, scale, shift */
        const g_value *out = &g->values[a[1]];
        hyb_conv cv = {n, in->c, in->h, in->w, out->c, (size_t)a[2], (size_t)a[3], (size_t)a[4],
                       out->h, out->w, val(g, a[0]), b[0], b[1], b[2], b[3], val(g, a[1]), 0};
        if (hyb_conv2d_f32(&cv, 1)) die("float convolution failed");
        break;
    }
    case S_POOL: { /* ints: in, out, k, s, p, avg, include_pad */
        const g_value *out = &g->values[a[1]];
        const hyb_pool pl = {n * in->c, in->h, in->w, out->h, out->w, (size_t)a[2], (size_t)a[3],
                             (size_t)a[4], (int)a[5], (int)a[6], val(g, a[0]), val(g, a[1])};
        if (hyb_pool2d_f32(&pl, 1)) die("pooling failed");
        break;
    }
    case S_DENSE: { /* y = x W^T + bias, summed in order (numpy's BLAS sums otherwise) */
        const size_t k = in->c * in->h * in->w, o = g->values[a[1]].c;
        const float *x = val(g, a[0]), *w = b[0], *bias = b[1];
        float *y = val(g, a[1]);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < o; j++) {
                float acc = 0.0f;
                for (size_t q = 0; q < k; q++) acc += x[i * k + q] * w[j * k + q];
                y[i * o + j] = bias ? acc + bias[j] : acc;
            }
        break;
    }
    case S_AFFINE: case S_PRELU: { /* per channel: x * scale + shift (no scale: x + shift), or PReLU */
        const size_t hw = in->h * in->w;
        const float *x = val(g, a[0]);
        float *y = val(g, a[1]);
        for (size_t i = 0; i < n * in->c; i++) {
            const size_t c = i % in->c;
            for (size_t p = 0; p < hw; p++) {
                const float v = x[i * hw + p];
                if (S->kind == S_PRELU) {
                    const float s = ((const float *)b[0])[c];
                    y[i * hw + p] = (v < 0.0f ? 0.0f : v) + s * (v > 0.0f ? 0.0f : v);
                } else {
                    const float sh = ((const float *)b[1])[c];
                    y[i * hw + p] = b[0] ? v * ((const float *)b[0])[c] + sh : v + sh;
                }
            }
        }
        break;
    }
    case S_ADD: { /* ints: in0, in1, out */
        const size_t m = n * in->c * in->h * in->w;
        const float *x = val(g, a[0]), *o = val(g, a[1]);
        float *y = val(g, a[2]);
        for (size_t q = 0; q < m; q++) y[q] = x[q] + o[q];
        break;
    }
    case S_MEAN: { /* the mean of each plane (numpy sums pairwise: within float32 rounding) */
        const size_t hw = in->h * in->w;
        const float *x = val(g, a[0]);
        float *y = val(g, a[1]);
        for (size_t i = 0; i < n * in->c; i++) {
            float acc = 0.0f;
            for (size_t p = 0; p < hw; p++) acc += x[i * hw + p];
            y[i] = acc / (float)hw;
        }
        break;
    }
    default: /* S_COPY: flatten */
        memcpy(val(g, a[1]), val(g, a[0]), n * in->bytes);
        break;
    }
}

static void put_values(const g_prog *g, const int64_t *ids, size_t count, size_t n) {
    for (size_t k = 0; k < count; k++) fwrite(val(g, ids[k]), 1, n * g->values[ids[k]].bytes, stdout);
}

static void get_values(const g_prog *g, const int64_t *ids, size_t count, size_t n) {
    for (size_t k = 0; k < count; k++)
        if (fread(val(g, ids[k]), 1, n * g->values[ids[k]].bytes, stdin) != n * g->values[ids[k]].bytes)
            die("short read");
}

static int run_graph(int argc, char **argv) {
    if (argc != 7) die("usage: graph PROGFILE scalar|neon run|trace|replay REPS MASK");
    g_prog g;
    read_prog(argv[2], &g);
    const int isa = strcmp(argv[3], "neon") == 0 ? HYB_ISA_NEON : HYB_ISA_SCALAR;
    const int trace = strcmp(argv[4], "trace") == 0, replay = strcmp(argv[4], "replay") == 0;
    const long reps = strtol(argv[5], NULL, 10), mask = strtol(argv[6], NULL, 10);
    if (hyb_set_isa(isa) < 0 || strcmp(hyb_active()->name, argv[3]) != 0) die("cannot force the ISA");
    uint32_t n;
    if (fread(&n, sizeof n, 1, stdin) != 1) die("short read");
    for (size_t v = 0; v < g.nvalues; v++) /* every value kept: a test and bench driver */
        if (!(g.values[v].data = malloc(n * g.values[v].bytes + 1))) die("out of memory");
    const int64_t input = 0;
    if (!replay) get_values(&g, &input, 1, n);
    for (size_t s = 0; s < g.nsteps; s++) {
        const g_step *S = &g.steps[s];
        if (replay) get_values(&g, S->feed, S->nfeed, n);
        const long r = replay ? 1 : (mask >> S->part) & 1 ? reps : 1;
        for (long k = 0; k < r; k++) run_step(&g, S, n);
        if (replay) put_values(&g, S->out, S->nout, n);
    }
    put_values(&g, &g.output, 1, n);
    if (trace)
        for (size_t s = 0; s < g.nsteps; s++) put_values(&g, g.steps[s].out, g.steps[s].nout, n);
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
    if (argc >= 2 && strcmp(argv[1], "graph") == 0) return run_graph(argc, argv);
    die("usage: neon_driver kernels | net NETFILE ... | graph PROGFILE ...");
    return 2;
}
