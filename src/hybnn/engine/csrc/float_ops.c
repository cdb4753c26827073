/* Fused float32 epilogue of a residual block: one pass over a tile of pixels that is in cache.
 *
 * source (a binary conv's int32 NHWC dot products times alpha, or a float NCHW tensor)
 *   -> per-channel steps (affine, + shortcut, + affine(shortcut), PReLU), in order
 *   -> the float NCHW result and/or the next sign(x + shift) packed to NHWC words.
 *
 * Every step rounds exactly as the numpy ops of hybnn/engine/graph.py do (one float32
 * rounding per multiply and per add, no FMA: the build uses -ffp-contract=off), so the fused
 * result equals the unfused one value for value. The tile body is compiled twice, plain (the
 * scalar reference, auto-vectorized only for the base ISA) and for AVX2, and picked at run time
 * by the engine's ISA; packing uses the ISA's own pack_nchw. */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* t[ch * tn + p] = float(a[p * c + ch]) * alpha[ch] for p in [p_lo, tn), every ch */
static inline void load_acc_plain(const int32_t *a, const float *alpha, size_t c, size_t tn,
                                  size_t p_lo, float *t) {
    for (size_t p = p_lo; p < tn; p++)
        for (size_t ch = 0; ch < c; ch++) t[ch * tn + p] = (float)a[p * c + ch] * alpha[ch];
}

#if HYB_X86
#include <immintrin.h>
/* The same, 8 pixels x 8 channels at a time through an 8x8 register transpose. */
__attribute__((target("avx2"))) static inline void load_acc_avx2(const int32_t *a, const float *alpha, size_t c,
                                                                size_t tn, size_t p_lo, float *t) {
    (void)p_lo;
    const size_t p8 = tn / 8 * 8, c8 = c / 8 * 8;
    for (size_t p = 0; p < p8; p += 8) {
        for (size_t ch = 0; ch < c8; ch += 8) {
            __m256 r[8];
            for (int q = 0; q < 8; q++)
                r[q] = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(a + (p + q) * c + ch)));
            const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
            const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
            const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
            const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
            const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            const __m256 col[8] = {
                _mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
            for (int q = 0; q < 8; q++) /* channel ch + q, pixels p..p+7 */
                _mm256_storeu_ps(t + (ch + q) * tn + p, _mm256_mul_ps(col[q], _mm256_set1_ps(alpha[ch + q])));
        }
        for (size_t q = p; q < p + 8; q++) /* channels past the last multiple of 8 */
            for (size_t ch = c8; ch < c; ch++) t[ch * tn + q] = (float)a[q * c + ch] * alpha[ch];
    }
    load_acc_plain(a, alpha, c, tn, p8, t); /* pixels past the last multiple of 8 */
}
#endif

/* Apply the steps to one tile t (c rows of tn pixels: t[ch * tn + p]) starting at pixel p0 of
 * sample i. Inline body shared by the plain and the AVX2 instantiation (load: how it reads the
 * binary conv's dot products). */
static inline __attribute__((always_inline)) void
tile_body(const hyb_ew *e, size_t i, size_t p0, size_t tn, float *t,
          void (*load)(const int32_t *, const float *, size_t, size_t, size_t, float *)) {
    const size_t c = e->c, hw = e->hw;
    if (e->acc) { /* transpose (tn, c) int32 to (c, tn) float, times alpha */
        load(e->acc + (i * hw + p0) * c, e->alpha, c, tn, 0, t);
    } else {
        for (size_t ch = 0; ch < c; ch++)
            memcpy(t + ch * tn, e->x + (i * c + ch) * hw + p0, tn * sizeof(float));
    }
    for (size_t ch = 0; ch < c; ch++) { /* every step on one channel's row while it is in L1 */
        float *r = t + ch * tn;
        for (int s = 0; s < e->nsteps; s++) {
            const hyb_ew_step *st = &e->steps[s];
            const float *o = st->other ? st->other + (i * c + ch) * hw + p0 : NULL;
            const float a = st->a ? st->a[ch] : 0.0f, b = st->b ? st->b[ch] : 0.0f;
            switch (st->op) {
            case HYB_EW_AFFINE:
                for (size_t p = 0; p < tn; p++) r[p] = r[p] * a + b;
                break;
            case HYB_EW_ADD:
                for (size_t p = 0; p < tn; p++) r[p] = r[p] + o[p];
                break;
            case HYB_EW_ADD_AFFINE:
                for (size_t p = 0; p < tn; p++) r[p] = r[p] + (o[p] * a + b);
                break;
            default: /* HYB_EW_PRELU: numpy's max(x, 0) + slope * min(x, 0) */
                for (size_t p = 0; p < tn; p++) {
                    const float v = r[p];
                    r[p] = (v < 0.0f ? 0.0f : v) + a * (v > 0.0f ? 0.0f : v); /* NaN stays NaN */
                }
                break;
            }
        }
        if (e->out) memcpy(e->out + (i * c + ch) * hw + p0, r, tn * sizeof(float));
        if (e->shift) {
            const float b = e->shift[ch];
            for (size_t p = 0; p < tn; p++) r[p] = r[p] + b;
        }
    }
}

static void tile_plain(const hyb_ew *e, size_t i, size_t p0, size_t tn, float *t) {
    tile_body(e, i, p0, tn, t, load_acc_plain);
}

#if HYB_X86
__attribute__((target("avx2"))) static void tile_avx2(const hyb_ew *e, size_t i, size_t p0, size_t tn,
                                                      float *t) {
    tile_body(e, i, p0, tn, t, load_acc_avx2);
}
#endif

typedef struct {
    const hyb_ew *e;
    size_t tile, tiles; /* pixels per tile, tiles per sample */
    void (*body)(const hyb_ew *, size_t, size_t, size_t, float *);
    hyb_pack_nchw_fn pack;
    int nan, failed;
} ew_job;

static void ew_range(void *ctx, size_t lo, size_t hi) {
    ew_job *j = (ew_job *)ctx;
    const hyb_ew *e = j->e;
    float *t = (float *)malloc(j->tile * e->c * sizeof(float));
    if (!t) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    const size_t cw = hyb_words(e->c);
    int nan = 0;
    for (size_t task = lo; task < hi; task++) {
        const size_t i = task / j->tiles, p0 = task % j->tiles * j->tile;
        const size_t tn = e->hw - p0 < j->tile ? e->hw - p0 : j->tile;
        j->body(e, i, p0, tn, t);
        if (e->bits) nan |= j->pack(t, 1, e->c, tn, e->bits + (i * e->hw + p0) * cw);
    }
    free(t);
    if (nan) __atomic_store_n(&j->nan, 1, __ATOMIC_RELAXED);
}

int hyb_epilogue(const hyb_ew *e, int nthreads) {
    ew_job j;
    memset(&j, 0, sizeof j);
    j.e = e;
    /* about 16 KiB of floats per tile (half of L1), a multiple of 8 pixels, 64 to 256 pixels:
     * the steps run one channel's row of the tile at a time, so a row must be long enough to
     * pay for its setup more than the whole tile must fit in L1 */
    size_t tile = 4096 / e->c / 8 * 8;
    tile = tile < 64 ? 64 : tile > 256 ? 256 : tile;
    j.tile = tile < e->hw ? tile : e->hw;
    j.tiles = (e->hw + j.tile - 1) / j.tile;
    j.body = tile_plain;
#if HYB_X86
    if (hyb_get_isa() != HYB_ISA_SCALAR) j.body = tile_avx2;
#endif
    j.pack = hyb_active()->pack_nchw;
    hyb_parallel_for(nthreads, e->n * j.tiles, ew_range, &j);
    if (j.failed) return -1;
    return j.nan;
}

/* ---- float32 convolution ----------------------------------------------------------------------
 * out[i][o][y][x] = sum over (c, di, dj) of w[o][c][di][dj] * xpad[i][c][y*s + di][x*s + dj]
 * (+ bias[o]), xpad the input zero-padded by p. The padded input is split once into s*s phase
 * planes, plane (a, b)[r][q] = xpad[s*r + a][s*q + b], so that for every tap the pixels of an
 * output row are contiguous: the kernel reads them as vectors, with no im2col copy. A 1x1
 * stride-1 convolution without padding reads its input as rows of 32 pixels instead. Only the
 * min(s, k) phases per axis that a tap reads are stored. Sums run over (c, di, dj) in order;
 * AVX2 uses FMA (one rounding per tap), the scalar reference multiplies and adds (two): both
 * are within float32 rounding of the exact sum. */
#define CONV_PX 16 /* output pixels per microkernel call (two AVX2 vectors) */
#define CONV_R 6   /* output channels per microkernel call */

typedef struct {
    const hyb_conv *cv;
    size_t vh, vw;      /* virtual output rows and row length */
    size_t hp, wp;      /* phase plane rows and columns */
    size_t ph;          /* phases per axis: min(s, k), the only ones a tap reads */
    const float *phase; /* (n, c, s, s, hp, wp) */
    const float *wpk;   /* weights repacked (O/R blocks, K, R) */
    const size_t *taps; /* tap_offset of every tap */
    size_t k2;          /* taps: c * k * k */
    int avx2;
} conv_job;

/* Offset of tap t (c, di, dj) in a sample's phase planes, for output row 0. */
static size_t tap_offset(const conv_job *j, size_t t) {
    const hyb_conv *cv = j->cv;
    const size_t kk = cv->k * cv->k, c = t / kk, di = t % kk / cv->k, dj = t % cv->k;
    const size_t a = di % cv->s, b = dj % cv->s; /* both < j->ph */
    return (((c * j->ph + a) * j->ph + b) * j->hp + di / cv->s) * j->wp + dj / cv->s;
}

static void conv_block_plain(const conv_job *j, const float *const *bp, size_t x0, size_t o0, size_t r,
                             float *acc /* [r][CONV_PX] */) {
    const float *w = j->wpk + o0 * j->k2;
    for (size_t q = 0; q < r * CONV_PX; q++) acc[q] = 0.0f;
    for (size_t t = 0; t < j->k2; t++)
        for (size_t q = 0; q < r; q++) {
            const float wv = w[t * r + q];
            for (size_t p = 0; p < CONV_PX; p++) acc[q * CONV_PX + p] += wv * bp[t][x0 + p];
        }
}

#if HYB_X86
/* R output channels (R <= 6, a constant after inlining) x 16 pixels; the accumulators are
 * named variables so that they stay in registers. */
#define CONV_ROW(q)                                                                                  \
    if (R > q) {                                                                                     \
        const __m256 wv = _mm256_broadcast_ss(w + t * R + q);                                        \
        a##q##0 = _mm256_fmadd_ps(wv, b0, a##q##0);                                                  \
        a##q##1 = _mm256_fmadd_ps(wv, b1, a##q##1);                                                  \
    }
#define CONV_OUT(q)                                                                                  \
    if (R > q) {                                                                                     \
        _mm256_storeu_ps(acc + q * CONV_PX, a##q##0);                                                \
        _mm256_storeu_ps(acc + q * CONV_PX + 8, a##q##1);                                            \
    }
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
conv_mk_avx2(const float *const *bp, size_t k2, size_t x0, const float *w, const size_t R, float *acc) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00,
           a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
    for (size_t t = 0; t < k2; t++) {
        const __m256 b0 = _mm256_loadu_ps(bp[t] + x0), b1 = _mm256_loadu_ps(bp[t] + x0 + 8);
        CONV_ROW(0) CONV_ROW(1) CONV_ROW(2) CONV_ROW(3) CONV_ROW(4) CONV_ROW(5)
    }
    CONV_OUT(0) CONV_OUT(1) CONV_OUT(2) CONV_OUT(3) CONV_OUT(4) CONV_OUT(5)
}

__attribute__((target("avx2,fma"))) static void conv_block_avx2(const conv_job *j, const float *const *bp,
                                                               size_t x0, size_t o0, size_t r, float *acc) {
    const float *w = j->wpk + o0 * j->k2;
    switch (r) { /* constant R: the accumulators stay in registers */
    case 6: conv_mk_avx2(bp, j->k2, x0, w, 6, acc); break;
    case 5: conv_mk_avx2(bp, j->k2, x0, w, 5, acc); break;
    case 4: conv_mk_avx2(bp, j->k2, x0, w, 4, acc); break;
    case 3: conv_mk_avx2(bp, j->k2, x0, w, 3, acc); break;
    case 2: conv_mk_avx2(bp, j->k2, x0, w, 2, acc); break;
    default: conv_mk_avx2(bp, j->k2, x0, w, 1, acc); break;
    }
}
#endif

/* Output channels o0.. (at most CONV_R) x pixels x0.. (at most CONV_PX) of row y of sample i. */
static inline void conv_block(const conv_job *j, const float *const *bp, size_t i, size_t y, size_t x0,
                              size_t o0, float *acc) {
    const hyb_conv *cv = j->cv;
    const size_t r = cv->o - o0 < CONV_R ? cv->o - o0 : CONV_R, plane = cv->ho * cv->wo;
#if HYB_X86
    if (j->avx2)
        conv_block_avx2(j, bp, x0, o0, r, acc);
    else
#endif
        conv_block_plain(j, bp, x0, o0, r, acc);
    const size_t first = y * j->vw + x0; /* linear output pixel of x0 */
    size_t len = j->vw - x0 < CONV_PX ? j->vw - x0 : CONV_PX;
    if (first >= plane) return;
    if (plane - first < len) len = plane - first;
    for (size_t q = 0; q < r; q++) {
        float *dst = cv->out + (i * cv->o + o0 + q) * plane + first;
        const float *v = acc + q * CONV_PX;
        if (cv->bias) {
            const float b = cv->bias[o0 + q];
            for (size_t p = 0; p < len; p++) dst[p] = v[p] + b;
            v = dst;
        }
        if (cv->scale) { /* the batch norm that follows, rounded as its own node */
            const float a = cv->scale[o0 + q], b = cv->shift[o0 + q];
            for (size_t p = 0; p < len; p++) dst[p] = v[p] * a + b;
        } else if (!cv->bias)
            memcpy(dst, v, len * sizeof(float));
    }
}

static void conv_rows(void *ctx, size_t lo, size_t hi) {
    const conv_job *j = (const conv_job *)ctx;
    const hyb_conv *cv = j->cv;
    const float **bp = (const float **)malloc(j->k2 * sizeof(float *));
    float acc[CONV_R * CONV_PX];
    if (!bp) {
        __atomic_store_n(&((hyb_conv *)cv)->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    /* small weights (the stem's): pixels outer, so that the 16 pixels of every tap stay in L1
     * while all channels use them; large weights (1x1 shortcuts): channels outer, so that a
     * block of weights stays in L1 while all pixels use it */
    const int pixels_outer = cv->o * j->k2 <= 16384;
    for (size_t task = lo; task < hi; task++) {
        const size_t i = task / j->vh, y = task % j->vh;
        const float *base = j->phase + i * cv->c * j->ph * j->ph * j->hp * j->wp + y * j->wp;
        for (size_t t = 0; t < j->k2; t++) bp[t] = base + j->taps[t];
        if (pixels_outer)
            for (size_t x0 = 0; x0 < j->vw; x0 += CONV_PX)
                for (size_t o0 = 0; o0 < cv->o; o0 += CONV_R) conv_block(j, bp, i, y, x0, o0, acc);
        else
            for (size_t o0 = 0; o0 < cv->o; o0 += CONV_R)
                for (size_t x0 = 0; x0 < j->vw; x0 += CONV_PX) conv_block(j, bp, i, y, x0, o0, acc);
    }
    free(bp);
}

int hyb_conv2d_f32(hyb_conv *cv, int nthreads) {
    conv_job j;
    memset(&j, 0, sizeof j);
    j.cv = cv;
    cv->failed = 0;
    const size_t s = cv->s, halo = (cv->k - 1) / s;
    const int flat = cv->k == 1 && s == 1 && cv->p == 0;
    j.vw = flat ? 32 : cv->wo;
    j.vh = flat ? (cv->ho * cv->wo + 31) / 32 : cv->ho;
    j.hp = j.vh + halo;
    j.wp = (j.vw + CONV_PX - 1) / CONV_PX * CONV_PX + halo;
    j.k2 = cv->c * cv->k * cv->k;
#if HYB_X86
    j.avx2 = hyb_get_isa() != HYB_ISA_SCALAR && __builtin_cpu_supports("fma");
#endif
    j.ph = s < cv->k ? s : cv->k;
    size_t planes, per, total; /* checked: a hostile geometry must not wrap the sizes */
    if (!hyb_mul(cv->n * cv->c, j.ph * j.ph, &planes) || !hyb_mul(j.hp, j.wp, &per) ||
        !hyb_mul(planes, per, &total) || total > SIZE_MAX / sizeof(float))
        return -1;
    float *phase = (float *)calloc(total, sizeof(float));
    float *wpk = (float *)malloc(cv->o * j.k2 * sizeof(float));
    size_t *taps = (size_t *)malloc(j.k2 * sizeof(size_t));
    if (!phase || !wpk || !taps) {
        free(phase);
        free(wpk);
        free(taps);
        return -1;
    }
    for (size_t t = 0; t < j.k2; t++) taps[t] = tap_offset(&j, t);
    j.taps = taps;
    for (size_t ic = 0; ic < cv->n * cv->c; ic++) { /* split the padded input into phases */
        const float *src = cv->x + ic * cv->h * cv->w;
        if (flat) {
            float *dst = phase + ic * per;
            for (size_t q = 0; q < cv->h * cv->w; q++) dst[q / 32 * j.wp + q % 32] = src[q];
            continue;
        }
        for (size_t a = 0; a < j.ph; a++)
            for (size_t b = 0; b < j.ph; b++) {
                float *dst = phase + ((ic * j.ph + a) * j.ph + b) * per;
                /* columns q with p <= q*s + b < w + p: from q_lo to q_hi (exclusive) */
                const size_t q_lo = b >= cv->p ? 0 : (cv->p - b + s - 1) / s;
                size_t q_hi = cv->w + cv->p > b ? (cv->w + cv->p - b + s - 1) / s : 0;
                q_hi = q_hi < j.wp ? q_hi : j.wp;
                for (size_t r = 0; r < j.hp; r++) {
                    const size_t row = r * s + a; /* in padded coordinates */
                    if (row < cv->p || row - cv->p >= cv->h) continue;
                    const float *line = src + (row - cv->p) * cv->w + (q_lo * s + b - cv->p);
                    float *d = dst + r * j.wp;
                    for (size_t q = q_lo; q < q_hi; q++) d[q] = line[(q - q_lo) * s];
                }
            }
    }
    for (size_t o0 = 0; o0 < cv->o; o0 += CONV_R) { /* weights as (block, tap, R) */
        const size_t r = cv->o - o0 < CONV_R ? cv->o - o0 : CONV_R;
        for (size_t t = 0; t < j.k2; t++)
            for (size_t q = 0; q < r; q++) wpk[o0 * j.k2 + t * r + q] = cv->wt[(o0 + q) * j.k2 + t];
    }
    j.phase = phase;
    j.wpk = wpk;
    hyb_parallel_for(nthreads, cv->n * j.vh, conv_rows, &j);
    free(phase);
    free(wpk);
    free(taps);
    return cv->failed ? -1 : 0;
}

/* ---- float32 pooling ------------------------------------------------------------------------
 * torch's windows (padding p, the last window of ceil_mode possibly partial), one output row
 * at a time. Max: exact in any order, NaN propagates; the padding never wins (-inf). Average:
 * the window summed in torch's order (rows, then columns; the padding adds +0.0) and divided
 * by torch's divisor, exactly as the numpy reference rounds. */
typedef struct {
    const hyb_pool *pl;
    void (*maxrow)(float *m, const float *row, size_t w);
    void (*maxcols)(float *out, const float *row, size_t n, size_t s, size_t k, size_t avail);
    void (*avgrow)(float *out, const float *win, size_t n, size_t s, size_t k, size_t w,
                   size_t avail, float inner);
    int failed;
} pool_job;

/* max(a, v), NaN propagating: the one rule every max pass uses */
static inline __attribute__((always_inline)) float nanmax(float a, float v) {
    return (v > a || v != v) && a == a ? v : a;
}

/* m = max(m, row), NaN propagating (the vertical pass of max pooling, vectorizable) */
static inline __attribute__((always_inline)) void maxrow_body(float *m, const float *row, size_t w) {
    for (size_t q = 0; q < w; q++) m[q] = nanmax(m[q], row[q]);
}

/* The horizontal pass of max pooling: out[xo] = max over d < k of row[xo s + d], d in order. */
static inline __attribute__((always_inline)) void maxcols_body(float *out, const float *row, size_t n,
                                                               size_t s, size_t k) {
    for (size_t xo = 0; xo < n; xo++) out[xo] = row[xo * s];
    for (size_t d = 1; d < k; d++)
        for (size_t xo = 0; xo < n; xo++) out[xo] = nanmax(out[xo], row[xo * s + d]);
}

/* The windows of one output row that lie inside the input (win: the first one's corner),
 * summed in torch's order (rows, then columns) one tap at a time for every window: a vector
 * pass per tap instead of a dependency chain per window. */
static inline __attribute__((always_inline)) void avgrow_body(float *out, const float *win, size_t n,
                                                              size_t s, size_t k, size_t w,
                                                              float inner) {
    for (size_t xo = 0; xo < n; xo++) out[xo] = win[xo * s];
    for (size_t q = 1; q < k; q++)
        for (size_t xo = 0; xo < n; xo++) out[xo] = out[xo] + win[xo * s + q];
    for (size_t r = 1; r < k; r++)
        for (size_t q = 0; q < k; q++)
            for (size_t xo = 0; xo < n; xo++) out[xo] = out[xo] + win[r * w + xo * s + q];
    for (size_t xo = 0; xo < n; xo++) out[xo] = out[xo] / inner;
}

static void maxrow_plain(float *m, const float *row, size_t w) { maxrow_body(m, row, w); }
static void maxcols_plain(float *out, const float *row, size_t n, size_t s, size_t k,
                          size_t avail) {
    (void)avail;
    maxcols_body(out, row, n, s, k);
}
static void avgrow_plain(float *out, const float *win, size_t n, size_t s, size_t k, size_t w,
                         size_t avail, float inner) {
    (void)avail;
    avgrow_body(out, win, n, s, k, w, inner);
}

#if HYB_X86
__attribute__((target("avx2"))) static void maxrow_avx2(float *m, const float *row, size_t w) {
    maxrow_body(m, row, w);
}

/* p[0], p[2], ..., p[14] (reads p[15] too) */
__attribute__((target("avx2"))) static inline __m256 evens_avx2(const float *p) {
    const __m256 e = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), 0x88);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
}

__attribute__((target("avx2"))) static inline __m256 nanmax_avx2(__m256 a, __m256 v) {
    const __m256 take = _mm256_and_ps(_mm256_or_ps(_mm256_cmp_ps(v, a, _CMP_GT_OQ),
                                                   _mm256_cmp_ps(v, v, _CMP_UNORD_Q)),
                                      _mm256_cmp_ps(a, a, _CMP_ORD_Q));
    return _mm256_blendv_ps(a, v, take);
}

/* Stride 2 (the stem's max pooling, the shortcuts' average): 8 windows at a time, each one's
 * taps in the same order as the plain pass. A block reads 2 * 8 + k - 1 floats of a row, so it
 * runs while that stays inside the avail floats readable from the row's start. */
__attribute__((target("avx2"))) static void maxcols_avx2(float *out, const float *row, size_t n,
                                                         size_t s, size_t k, size_t avail) {
    size_t xo = 0;
    if (s == 2)
        for (; xo + 8 <= n && 2 * xo + k + 15 <= avail; xo += 8) {
            __m256 m = evens_avx2(row + 2 * xo);
            for (size_t d = 1; d < k; d++) m = nanmax_avx2(m, evens_avx2(row + 2 * xo + d));
            _mm256_storeu_ps(out + xo, m);
        }
    maxcols_body(out + xo, row + xo * s, n - xo, s, k);
}

__attribute__((target("avx2"))) static void avgrow_avx2(float *out, const float *win, size_t n, size_t s,
                                                        size_t k, size_t w, size_t avail,
                                                        float inner) {
    size_t xo = 0;
    if (s == 2)
        for (; xo + 8 <= n && 2 * xo + k + 15 <= avail; xo += 8) {
            __m256 acc = evens_avx2(win + 2 * xo);
            for (size_t r = 0; r < k; r++)
                for (size_t q = r == 0; q < k; q++)
                    acc = _mm256_add_ps(acc, evens_avx2(win + r * w + 2 * xo + q));
            _mm256_storeu_ps(out + xo, _mm256_div_ps(acc, _mm256_set1_ps(inner)));
        }
    avgrow_body(out + xo, win + xo * s, n - xo, s, k, w, inner);
}
#endif

static size_t pool_count(const hyb_pool *pl, long start, size_t size) {
    long end = start + (long)pl->k;
    if (end > (long)size + (long)pl->p) end = (long)size + (long)pl->p;
    if (pl->include_pad) return (size_t)(end - start);
    if (end > (long)size) end = (long)size;
    return (size_t)(end - (start < 0 ? 0 : start));
}

/* Max: the rows of each window reduced first (a vector pass per row into a row padded with
 * -inf, which never wins), then its columns. row holds w + 2p + k floats. */
static void max_row(const pool_job *j, const float *x, size_t y, float *out, float *row) {
    const hyb_pool *pl = j->pl;
    const long k = (long)pl->k, r0 = (long)y * (long)pl->s - (long)pl->p;
    const long lo = r0 < 0 ? 0 : r0, hi = r0 + k > (long)pl->h ? (long)pl->h : r0 + k;
    const size_t padded = pl->w + 2 * pl->p + pl->k;
    for (size_t q = 0; q < pl->p; q++) row[q] = -__builtin_inff();
    for (size_t q = pl->p + pl->w; q < padded; q++) row[q] = -__builtin_inff();
    memcpy(row + pl->p, x + (size_t)lo * pl->w, pl->w * sizeof(float));
    for (long r = lo + 1; r < hi; r++) j->maxrow(row + pl->p, x + (size_t)r * pl->w, pl->w);
    j->maxcols(out, row, pl->wo, pl->s, pl->k, padded);
}

/* Average: the window summed in torch's order (rows, then columns; the padding adds +0.0). */
static void avg_row(const pool_job *j, const float *x, size_t y, float *out) {
    const hyb_pool *pl = j->pl;
    const long k = (long)pl->k, r0 = (long)y * (long)pl->s - (long)pl->p;
    const long h = (long)pl->h, w = (long)pl->w;
    const float dh = (float)pool_count(pl, r0, pl->h);
    const int rows_inside = r0 >= 0 && r0 + k <= h;
    const float inner = dh * (float)k; /* the divisor of a window inside the input */
    /* the windows xa <= xo < xb lie inside the input's columns */
    const long s = (long)pl->s, xa = ((long)pl->p + s - 1) / s, last = w - k + (long)pl->p;
    long xb = last < 0 ? 0 : last / s + 1;
    if (xb > (long)pl->wo) xb = (long)pl->wo;
    if (rows_inside && xa < xb)
        j->avgrow(out + xa, x + r0 * w + xa * s - (long)pl->p, (size_t)(xb - xa), pl->s, pl->k,
                  pl->w, (size_t)(w - (xa * s - (long)pl->p)), inner);
    for (size_t xo = 0; xo < pl->wo; xo++) {
        const long q0 = (long)xo * (long)pl->s - (long)pl->p;
        float acc = 0.0f;
        int first = 1;
        if (rows_inside && (long)xo >= xa && (long)xo < xb) continue; /* done above */
        for (long r = r0; r < r0 + k; r++)
            for (long q = q0; q < q0 + k; q++) {
                const float v = r >= 0 && r < h && q >= 0 && q < w ? x[r * w + q] : 0.0f;
                acc = first ? v : acc + v;
                first = 0;
            }
        out[xo] = acc / (dh * (float)pool_count(pl, q0, pl->w));
    }
}

static void pool_rows(void *ctx, size_t lo, size_t hi) {
    pool_job *j = (pool_job *)ctx;
    const hyb_pool *pl = j->pl;
    float *m = pl->avg ? NULL : (float *)malloc((pl->w + 2 * pl->p + pl->k) * sizeof(float));
    if (!pl->avg && !m) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (size_t task = lo; task < hi; task++) { /* task = (plane, output row) */
        const size_t plane = task / pl->ho, y = task % pl->ho;
        const float *x = pl->x + plane * pl->h * pl->w;
        float *out = pl->out + (plane * pl->ho + y) * pl->wo;
        if (pl->avg)
            avg_row(j, x, y, out);
        else
            max_row(j, x, y, out, m);
    }
    free(m);
}

int hyb_pool2d_f32(const hyb_pool *pl, int nthreads) {
    pool_job j = {pl, maxrow_plain, maxcols_plain, avgrow_plain, 0};
#if HYB_X86
    if (hyb_get_isa() != HYB_ISA_SCALAR) {
        j.maxrow = maxrow_avx2;
        j.maxcols = maxcols_avx2;
        j.avgrow = avgrow_avx2;
    }
#endif
    hyb_parallel_for(nthreads, pl->planes * pl->ho, pool_rows, &j);
    return j.failed ? -1 : 0;
}
