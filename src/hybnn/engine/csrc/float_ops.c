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

/* Apply the steps to one tile t (c rows of tn pixels: t[ch * tn + p]) starting at pixel p0 of
 * sample i. Inline body shared by the plain and the AVX2 instantiation. */
static inline __attribute__((always_inline)) void
tile_body(const hyb_ew *e, size_t i, size_t p0, size_t tn, float *t) {
    const size_t c = e->c, hw = e->hw;
    if (e->acc) { /* transpose (tn, c) int32 to (c, tn) float, times alpha */
        const int32_t *a = e->acc + (i * hw + p0) * c;
        for (size_t p = 0; p < tn; p++)
            for (size_t ch = 0; ch < c; ch++) t[ch * tn + p] = (float)a[p * c + ch] * e->alpha[ch];
    } else {
        for (size_t ch = 0; ch < c; ch++)
            memcpy(t + ch * tn, e->x + (i * c + ch) * hw + p0, tn * sizeof(float));
    }
    for (int s = 0; s < e->nsteps; s++) {
        const hyb_ew_step *st = &e->steps[s];
        for (size_t ch = 0; ch < c; ch++) {
            float *r = t + ch * tn;
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
    }
    if (e->out)
        for (size_t ch = 0; ch < c; ch++)
            memcpy(e->out + (i * c + ch) * hw + p0, t + ch * tn, tn * sizeof(float));
    if (e->shift)
        for (size_t ch = 0; ch < c; ch++) {
            float *r = t + ch * tn;
            const float b = e->shift[ch];
            for (size_t p = 0; p < tn; p++) r[p] = r[p] + b;
        }
}

static void tile_plain(const hyb_ew *e, size_t i, size_t p0, size_t tn, float *t) {
    tile_body(e, i, p0, tn, t);
}

#if HYB_X86
__attribute__((target("avx2"))) static void tile_avx2(const hyb_ew *e, size_t i, size_t p0, size_t tn,
                                                      float *t) {
    tile_body(e, i, p0, tn, t);
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
    /* about 32 KiB of floats per tile (L1), a multiple of 8 pixels, 8 to 256 pixels */
    size_t tile = 8192 / e->c / 8 * 8;
    tile = tile < 8 ? 8 : tile > 256 ? 256 : tile;
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
