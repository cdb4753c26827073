/* Portable kernels (any CPU) and the scalar helpers every ISA shares. */
#include <string.h>

#include "engine.h"

int hyb_pack_rows_scalar(const float *x, size_t rows, size_t k, uint64_t *out) {
    const size_t kw = hyb_words(k);
    int nan = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * k;
        uint64_t *o = out + r * kw;
        for (size_t w = 0; w < kw; w++) {
            const size_t end = (w + 1) * 64 < k ? (w + 1) * 64 : k;
            uint64_t bits = 0;
            for (size_t j = w * 64; j < end; j++) {
                const float v = xr[j];
                nan |= v != v;
                bits |= (uint64_t)(v < 0.0f) << (j - w * 64);
            }
            o[w] = bits;
        }
    }
    return nan;
}

int hyb_pack_nchw_scalar(const float *x, size_t n, size_t c, size_t hw, uint64_t *out) {
    const size_t cw = hyb_words(c);
    int nan = 0;
    memset(out, 0, n * hw * cw * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++)
        for (size_t ch = 0; ch < c; ch++) {
            const float *plane = x + (i * c + ch) * hw;
            uint64_t *o = out + i * hw * cw + ch / 64;
            const uint64_t bit = (uint64_t)1 << (ch % 64);
            for (size_t p = 0; p < hw; p++) {
                const float v = plane[p];
                nan |= v != v;
                if (v < 0.0f) o[p * cw] |= bit;
            }
        }
    return nan;
}

/* Bit-reversed bytes, a constant table (no lazy set-up shared between threads). */
#define HYB_R2(n) n, n + 2 * 64, n + 1 * 64, n + 3 * 64
#define HYB_R4(n) HYB_R2(n), HYB_R2(n + 2 * 16), HYB_R2(n + 1 * 16), HYB_R2(n + 3 * 16)
#define HYB_R6(n) HYB_R4(n), HYB_R4(n + 2 * 4), HYB_R4(n + 1 * 4), HYB_R4(n + 3 * 4)
static const uint8_t rev[256] = {HYB_R6(0), HYB_R6(2), HYB_R6(1), HYB_R6(3)};

/* numpy.packbits order (big-endian bits, 1 = +1) to engine words (little-endian bits, 1 = -1). */
void hyb_pack_bytes(const uint8_t *codes, size_t rows, size_t nbits, uint64_t *out) {
    const size_t nbytes = (nbits + 7) / 8, kw = hyb_words(nbits);
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *c = codes + r * nbytes;
        uint64_t *o = out + r * kw;
        for (size_t w = 0; w < kw; w++) {
            uint64_t word = 0;
            for (size_t b = 0; b < 8 && w * 8 + b < nbytes; b++)
                word |= (uint64_t)rev[c[w * 8 + b]] << (8 * b);
            word = ~word;
            const size_t valid = nbits - w * 64;
            if (valid < 64) word &= ((uint64_t)1 << valid) - 1;
            o[w] = word;
        }
    }
}

/* Max-pool of ±1 values on packed NHWC: the max is +1 (bit 0) unless every value is -1, so the
 * pooled word is the AND of the window's words. No padding (floor mode, like nn.MaxPool2d). */
void hyb_maxpool(const uint64_t *x, size_t n, size_t h, size_t w, size_t cw, size_t k,
                 size_t stride, uint64_t *out) {
    const size_t ho = (h - k) / stride + 1, wo = (w - k) / stride + 1;
    for (size_t i = 0; i < n; i++)
        for (size_t oy = 0; oy < ho; oy++)
            for (size_t ox = 0; ox < wo; ox++)
                for (size_t c = 0; c < cw; c++) {
                    uint64_t acc = ~(uint64_t)0;
                    for (size_t dy = 0; dy < k; dy++)
                        for (size_t dx = 0; dx < k; dx++)
                            acc &= x[((i * h + oy * stride + dy) * w + ox * stride + dx) * cw + c];
                    out[((i * ho + oy) * wo + ox) * cw + c] = acc;
                }
}

static void mk_scalar_contig(const uint64_t *a, int nk, const uint64_t *w, uint32_t *acc, int add) {
    if (!add) memset(acc, 0, HYB_GROUP * sizeof(*acc));
    for (int k = 0; k < nk; k++, w += HYB_GROUP) {
        const uint64_t x = a[k];
        for (int c = 0; c < HYB_GROUP; c++) acc[c] += (uint32_t)__builtin_popcountll(x ^ w[c]);
    }
}

static void mk_scalar_ind(const uint64_t *const *a, int nk, const uint64_t *w, uint32_t *acc, int add) {
    if (!add) memset(acc, 0, HYB_GROUP * sizeof(*acc));
    for (int k = 0; k < nk; k++, w += HYB_GROUP) {
        const uint64_t x = *a[k];
        for (int c = 0; c < HYB_GROUP; c++) acc[c] += (uint32_t)__builtin_popcountll(x ^ w[c]);
    }
}

uint32_t hyb_thr_bits_scalar(const uint32_t *pop, const int32_t *thr) {
    uint32_t bits = 0;
    for (int c = 0; c < HYB_GROUP; c++) bits |= (uint32_t)((int32_t)pop[c] > thr[c]) << c;
    return bits;
}

const hyb_kernels hyb_kernels_scalar = {
    "scalar", 0, mk_scalar_contig, mk_scalar_ind, hyb_pack_rows_scalar, hyb_pack_nchw_scalar, NULL,
    hyb_thr_bits_scalar, NULL, NULL,
};
