/* Portable C stand-ins for the AVX-512 intrinsics used by kernels_avx512.c, so that the
 * AVX-512 kernels' logic can be tested on CPUs without AVX-512 (test_engine_avx512.py). */
#include <stdint.h>
#include <string.h>

typedef union { uint64_t q[8]; uint32_t d[16]; int32_t i[16]; } __m512i;
typedef union { uint64_t q[4]; uint32_t d[8]; } __m256i;
typedef struct { float f[16]; } __m512;
typedef uint16_t __mmask16;
enum { _CMP_LT_OQ = 17, _CMP_UNORD_Q = 3 };

static inline __m512i _mm512_setzero_si512(void) { __m512i r; memset(&r, 0, sizeof r); return r; }
static inline __m512 _mm512_setzero_ps(void) { __m512 r; memset(&r, 0, sizeof r); return r; }
static inline __m512i _mm512_set1_epi64(long long x) {
    __m512i r; for (int i = 0; i < 8; i++) r.q[i] = (uint64_t)x; return r;
}
static inline __m512i _mm512_loadu_si512(const void *p) { __m512i r; memcpy(&r, p, 64); return r; }
static inline void _mm512_storeu_si512(void *p, __m512i a) { memcpy(p, &a, 64); }
static inline __m512 _mm512_loadu_ps(const float *p) { __m512 r; memcpy(&r, p, 64); return r; }
static inline __m512i _mm512_xor_si512(__m512i a, __m512i b) {
    for (int i = 0; i < 8; i++) a.q[i] ^= b.q[i]; return a;
}
static inline __m512i _mm512_add_epi64(__m512i a, __m512i b) {
    for (int i = 0; i < 8; i++) a.q[i] += b.q[i]; return a;
}
static inline __m512i _mm512_add_epi32(__m512i a, __m512i b) {
    for (int i = 0; i < 16; i++) a.d[i] += b.d[i]; return a;
}
static inline __m512i _mm512_popcnt_epi64(__m512i a) {
    for (int i = 0; i < 8; i++) a.q[i] = (uint64_t)__builtin_popcountll(a.q[i]); return a;
}
static inline __m256i _mm512_cvtepi64_epi32(__m512i a) { /* truncating narrow (vpmovqd) */
    __m256i r; for (int i = 0; i < 8; i++) r.d[i] = (uint32_t)a.q[i]; return r;
}
static inline __m512i _mm512_castsi256_si512(__m256i a) {
    __m512i r = _mm512_setzero_si512(); memcpy(&r, &a, 32); return r;
}
static inline __m512i _mm512_inserti64x4(__m512i a, __m256i b, int hi) {
    memcpy(&a.q[hi ? 4 : 0], &b, 32); return a;
}
static inline uint16_t _mm512_cmpgt_epi32_mask(__m512i a, __m512i b) {
    uint16_t m = 0; for (int i = 0; i < 16; i++) m |= (uint16_t)((a.i[i] > b.i[i]) << i); return m;
}
static inline __mmask16 _mm512_cmp_ps_mask(__m512 a, __m512 b, int op) {
    __mmask16 m = 0;
    for (int i = 0; i < 16; i++) {
        const float x = a.f[i], y = b.f[i];
        const int bit = op == _CMP_LT_OQ ? x < y : (x != x || y != y);
        m |= (__mmask16)(bit << i);
    }
    return m;
}
