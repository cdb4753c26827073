/* AVX2 kernels. AVX2 has no vector popcount, so each word is split once into nibble planes
 * (lo = x & 0x0f.., hi = (x >> 4) & 0x0f..) and popcount(a ^ w) becomes two 16-entry table
 * lookups (vpshufb) on (a_lo ^ w_lo) and (a_hi ^ w_hi): weights are stored pre-split. Eight
 * vectors hold 32 output channels (vertical layout, one broadcast activation word per step),
 * byte counters absorb up to 31 words (31 * 8 <= 255), then vpsadbw sums each 64-bit lane. */
#include "engine.h"

#if HYB_X86
#include <immintrin.h>

#define T_AVX2 __attribute__((target("avx2,popcnt")))

#define LD(p) _mm256_loadu_si256((const __m256i *)(p))
#define CNT(al, ah, p)                                                                            \
    _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_xor_si256(al, LD(p))),                        \
                    _mm256_shuffle_epi8(lut, _mm256_xor_si256(ah, LD((p) + 32))))
#define STEP(al, ah)                                                                              \
    do {                                                                                          \
        c0 = _mm256_add_epi8(c0, CNT(al, ah, w));                                                 \
        c1 = _mm256_add_epi8(c1, CNT(al, ah, w + 4));                                             \
        c2 = _mm256_add_epi8(c2, CNT(al, ah, w + 8));                                             \
        c3 = _mm256_add_epi8(c3, CNT(al, ah, w + 12));                                            \
        c4 = _mm256_add_epi8(c4, CNT(al, ah, w + 16));                                            \
        c5 = _mm256_add_epi8(c5, CNT(al, ah, w + 20));                                            \
        c6 = _mm256_add_epi8(c6, CNT(al, ah, w + 24));                                            \
        c7 = _mm256_add_epi8(c7, CNT(al, ah, w + 28));                                            \
    } while (0)
#define LUT4                                                                                      \
    _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, \
                     2, 3, 2, 3, 3, 4)

/* The byte counters of two vectors (channels 0-3 and 4-7) summed into 8 uint32 pops. */
T_AVX2 static inline __m256i pops8(__m256i lo, __m256i hi) {
    const __m256i z = _mm256_setzero_si256();
    __m256i s = _mm256_or_si256(_mm256_sad_epu8(lo, z), _mm256_slli_epi64(_mm256_sad_epu8(hi, z), 32));
    return _mm256_permutevar8x32_epi32(s, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
}

T_AVX2 static inline void flush2(__m256i lo, __m256i hi, uint32_t *acc, int add) {
    const __m256i s = pops8(lo, hi);
    _mm256_storeu_si256((__m256i *)acc, add ? _mm256_add_epi32(LD(acc), s) : s);
}

T_AVX2 static inline uint32_t bits8(__m256i lo, __m256i hi, const int32_t *thr) {
    const __m256i gt = _mm256_cmpgt_epi32(pops8(lo, hi), LD(thr));
    return (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(gt));
}

#define BITS_ALL()                                                                                \
    (bits8(c0, c1, thr) | bits8(c2, c3, thr + 8) << 8 | bits8(c4, c5, thr + 16) << 16 |           \
     bits8(c6, c7, thr + 24) << 24)

#define FLUSH_ALL()                                                                               \
    do {                                                                                          \
        flush2(c0, c1, acc, add);                                                                 \
        flush2(c2, c3, acc + 8, add);                                                             \
        flush2(c4, c5, acc + 16, add);                                                            \
        flush2(c6, c7, acc + 24, add);                                                            \
    } while (0)

/* GCC's partial redundancy elimination keeps spilling the counters in these loops; without it
 * every counter stays in a register (about 10 % faster). */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_PRE __attribute__((optimize("no-tree-pre")))
#else
#define NO_PRE
#endif

T_AVX2 NO_PRE static void mk_avx2_contig(const uint64_t *a, int nk, const uint64_t *w, uint32_t *acc,
                                         int add) {
    const __m256i lut = LUT4, z = _mm256_setzero_si256();
    __m256i c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, c6 = z, c7 = z;
    for (int k = 0; k < nk; k++, w += 64) {
        const __m256i al = _mm256_set1_epi64x((long long)a[2 * k]);
        const __m256i ah = _mm256_set1_epi64x((long long)a[2 * k + 1]);
        STEP(al, ah);
    }
    FLUSH_ALL();
}

T_AVX2 NO_PRE static void mk_avx2_ind(const uint64_t *const *a, int nk, const uint64_t *w, uint32_t *acc,
                                      int add) {
    const __m256i lut = LUT4, z = _mm256_setzero_si256();
    __m256i c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, c6 = z, c7 = z;
    for (int k = 0; k < nk; k++, w += 64) {
        const __m256i al = _mm256_set1_epi64x((long long)a[k][0]);
        const __m256i ah = _mm256_set1_epi64x((long long)a[k][1]);
        STEP(al, ah);
    }
    FLUSH_ALL();
}

T_AVX2 NO_PRE static uint32_t mk_avx2_contig_bits(const uint64_t *a, int nk, const uint64_t *w,
                                                  const int32_t *thr) {
    const __m256i lut = LUT4, z = _mm256_setzero_si256();
    __m256i c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, c6 = z, c7 = z;
    for (int k = 0; k < nk; k++, w += 64) {
        const __m256i al = _mm256_set1_epi64x((long long)a[2 * k]);
        const __m256i ah = _mm256_set1_epi64x((long long)a[2 * k + 1]);
        STEP(al, ah);
    }
    return BITS_ALL();
}

T_AVX2 NO_PRE static uint32_t mk_avx2_ind_bits(const uint64_t *const *a, int nk, const uint64_t *w,
                                               const int32_t *thr) {
    const __m256i lut = LUT4, z = _mm256_setzero_si256();
    __m256i c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, c6 = z, c7 = z;
    for (int k = 0; k < nk; k++, w += 64) {
        const __m256i al = _mm256_set1_epi64x((long long)a[k][0]);
        const __m256i ah = _mm256_set1_epi64x((long long)a[k][1]);
        STEP(al, ah);
    }
    return BITS_ALL();
}

T_AVX2 static void split_avx2(const uint64_t *x, size_t n, uint64_t *out) {
    const uint64_t m = 0x0f0f0f0f0f0f0f0fULL;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = x[i] & m;
        out[2 * i + 1] = (x[i] >> 4) & m;
    }
}

/* 8 floats -> 8 sign bits (1 where x < 0, NaN compares false) and a NaN accumulator. */
T_AVX2 static inline uint64_t sign8(const float *p, __m256 *nan) {
    const __m256 v = _mm256_loadu_ps(p);
    *nan = _mm256_or_ps(*nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    return (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
}

T_AVX2 static int pack_rows_avx2(const float *x, size_t rows, size_t k, uint64_t *out) {
    const size_t kw = hyb_words(k), full = k / 64;
    __m256 nan = _mm256_setzero_ps();
    int tail_nan = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * k;
        uint64_t *o = out + r * kw;
        for (size_t w = 0; w < full; w++) {
            const float *p = xr + 64 * w;
            uint64_t bits = 0;
            for (int j = 0; j < 8; j++) bits |= sign8(p + 8 * j, &nan) << (8 * j);
            o[w] = bits;
        }
        if (full < kw) tail_nan |= hyb_pack_rows_scalar(xr + 64 * full, 1, k - 64 * full, o + full);
    }
    return tail_nan | (_mm256_movemask_ps(nan) != 0);
}

/* NCHW -> packed NHWC: 8 pixels at a time, channel c sets bit c%64 of the pixel's word c/64. */
T_AVX2 int hyb_pack_nchw_avx2(const float *x, size_t n, size_t c, size_t hw, uint64_t *out) {
    const size_t cw = hyb_words(c), full = hw / 8 * 8;
    __m256 nan = _mm256_setzero_ps();
    const __m256 zero = _mm256_setzero_ps();
    int tail_nan = 0;
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * c * hw;
        uint64_t *oi = out + i * hw * cw;
        for (size_t p = 0; p < full; p += 8)
            for (size_t w = 0; w < cw; w++) {
                __m256i lo = _mm256_setzero_si256(), hi = lo, bit = _mm256_set1_epi64x(1);
                const size_t end = (w + 1) * 64 < c ? (w + 1) * 64 : c;
                for (size_t ch = w * 64; ch < end; ch++) {
                    const __m256 v = _mm256_loadu_ps(xi + ch * hw + p);
                    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
                    const __m256i m = _mm256_castps_si256(_mm256_cmp_ps(v, zero, _CMP_LT_OQ));
                    lo = _mm256_or_si256(lo, _mm256_and_si256(bit, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(m))));
                    hi = _mm256_or_si256(hi, _mm256_and_si256(bit, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1))));
                    bit = _mm256_add_epi64(bit, bit);
                }
                uint64_t tmp[8];
                _mm256_storeu_si256((__m256i *)tmp, lo);
                _mm256_storeu_si256((__m256i *)(tmp + 4), hi);
                for (int q = 0; q < 8; q++) oi[(p + q) * cw + w] = tmp[q];
            }
        for (size_t p = full; p < hw; p++) /* tail pixels */
            for (size_t w = 0; w < cw; w++) {
                uint64_t bits = 0;
                const size_t end = (w + 1) * 64 < c ? (w + 1) * 64 : c;
                for (size_t ch = w * 64; ch < end; ch++) {
                    const float v = xi[ch * hw + p];
                    tail_nan |= v != v;
                    bits |= (uint64_t)(v < 0.0f) << (ch - w * 64);
                }
                oi[p * cw + w] = bits;
            }
    }
    return tail_nan | (_mm256_movemask_ps(nan) != 0);
}

T_AVX2 static uint32_t thr_bits_avx2(const uint32_t *pop, const int32_t *thr) {
    uint32_t bits = 0;
    for (int v = 0; v < 4; v++) {
        const __m256i gt = _mm256_cmpgt_epi32(LD(pop + 8 * v), LD(thr + 8 * v));
        bits |= (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(gt)) << (8 * v);
    }
    return bits;
}

const hyb_kernels hyb_kernels_avx2 = {
    "avx2", 1, mk_avx2_contig, mk_avx2_ind, pack_rows_avx2, hyb_pack_nchw_avx2, split_avx2,
    thr_bits_avx2, mk_avx2_contig_bits, mk_avx2_ind_bits,
};
#endif
