/* AVX-512 kernels (needs AVX512F + VPOPCNTDQ): four 512-bit accumulators hold 32 output
 * channels; each step broadcasts one activation word, XORs it with 8 weight words per vector
 * and adds vpopcntq. No nibble split: weights use the plain vertical layout [k][32]. */
#include "engine.h"

#if defined(HYB_AVX512_SHIM) /* tests: the intrinsics below emulated in portable C */
#include HYB_AVX512_SHIM
#define T_512
#define HYB_NCHW_512 hyb_pack_nchw_scalar
#elif HYB_X86
#include <immintrin.h>
#define T_512 __attribute__((target("avx512f,avx512vpopcntdq,avx2,popcnt")))
#define HYB_NCHW_512 hyb_pack_nchw_avx2 /* memory-bound: AVX2's is as good */
#endif

#if HYB_X86 || defined(HYB_AVX512_SHIM)

#define POP(x, p) _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_loadu_si512((const void *)(p))))

T_512 static inline void flush512(__m512i s0, __m512i s1, __m512i s2, __m512i s3, uint32_t *acc,
                                  int add) {
    /* lane counts are < 2^32: narrow each vector to 8 uint32 and add */
    const __m512i lo = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(s0)),
                                          _mm512_cvtepi64_epi32(s1), 1);
    const __m512i hi = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(s2)),
                                          _mm512_cvtepi64_epi32(s3), 1);
    if (add) {
        _mm512_storeu_si512((void *)acc, _mm512_add_epi32(_mm512_loadu_si512((const void *)acc), lo));
        _mm512_storeu_si512((void *)(acc + 16),
                            _mm512_add_epi32(_mm512_loadu_si512((const void *)(acc + 16)), hi));
    } else {
        _mm512_storeu_si512((void *)acc, lo);
        _mm512_storeu_si512((void *)(acc + 16), hi);
    }
}

T_512 static void mk_512_contig(const uint64_t *a, int nk, const uint64_t *w, uint32_t *acc, int add) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (int k = 0; k < nk; k++, w += 32) {
        const __m512i x = _mm512_set1_epi64((long long)a[k]);
        s0 = _mm512_add_epi64(s0, POP(x, w));
        s1 = _mm512_add_epi64(s1, POP(x, w + 8));
        s2 = _mm512_add_epi64(s2, POP(x, w + 16));
        s3 = _mm512_add_epi64(s3, POP(x, w + 24));
    }
    flush512(s0, s1, s2, s3, acc, add);
}

T_512 static void mk_512_ind(const uint64_t *const *a, int nk, const uint64_t *w, uint32_t *acc,
                            int add) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (int k = 0; k < nk; k++, w += 32) {
        const __m512i x = _mm512_set1_epi64((long long)*a[k]);
        s0 = _mm512_add_epi64(s0, POP(x, w));
        s1 = _mm512_add_epi64(s1, POP(x, w + 8));
        s2 = _mm512_add_epi64(s2, POP(x, w + 16));
        s3 = _mm512_add_epi64(s3, POP(x, w + 24));
    }
    flush512(s0, s1, s2, s3, acc, add);
}

T_512 static int pack_rows_512(const float *x, size_t rows, size_t k, uint64_t *out) {
    const size_t kw = hyb_words(k), full = k / 64;
    const __m512 zero = _mm512_setzero_ps();
    __mmask16 nan = 0;
    int tail_nan = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * k;
        uint64_t *o = out + r * kw;
        for (size_t w = 0; w < full; w++) {
            uint64_t bits = 0;
            for (int j = 0; j < 4; j++) {
                const __m512 v = _mm512_loadu_ps(xr + 64 * w + 16 * j);
                nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                bits |= (uint64_t)_mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ) << (16 * j);
            }
            o[w] = bits;
        }
        if (full < kw) tail_nan |= hyb_pack_rows_scalar(xr + 64 * full, 1, k - 64 * full, o + full);
    }
    return tail_nan | (nan != 0);
}

T_512 static uint32_t thr_bits_512(const uint32_t *pop, const int32_t *thr) {
    const __m512i p0 = _mm512_loadu_si512((const void *)pop), t0 = _mm512_loadu_si512((const void *)thr);
    const __m512i p1 = _mm512_loadu_si512((const void *)(pop + 16));
    const __m512i t1 = _mm512_loadu_si512((const void *)(thr + 16));
    return (uint32_t)_mm512_cmpgt_epi32_mask(p0, t0) | ((uint32_t)_mm512_cmpgt_epi32_mask(p1, t1) << 16);
}

const hyb_kernels hyb_kernels_avx512 = {
    "avx512", 0, mk_512_contig, mk_512_ind, pack_rows_512, HYB_NCHW_512, NULL, thr_bits_512,
    NULL, NULL,
};
#endif
