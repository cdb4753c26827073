/* NEON kernels (aarch64, where NEON is always present). Sixteen 128-bit byte-counter vectors
 * hold 32 output channels (vector v: channels 2v and 2v+1, 8 bytes each); each step broadcasts
 * one activation word, XORs it with two weight words per vector and adds vcntq_u8 (popcount per
 * byte). A byte counter absorbs up to 31 words (31 * 8 <= 255, HYB_KBLOCK), then pairwise
 * widening adds fold the 8 bytes of each channel into one count. Plain weight layout [k][32]. */
#include "engine.h"

#if HYB_ARM64
#include <arm_neon.h>

#define CNT(x, w) vcntq_u8(vreinterpretq_u8_u64(veorq_u64(x, vreinterpretq_u64_u8(w))))

/* Channels 0-7 (or 8-15 ...) of four byte-counter vectors as two uint16x8 halves folded to one:
 * lane i = channel i's count (at most 31 * 64 = 1984). */
static inline uint16x8_t fold8(uint8x16_t c0, uint8x16_t c1, uint8x16_t c2, uint8x16_t c3) {
    const uint16x8_t p01 = vpaddq_u16(vpaddlq_u8(c0), vpaddlq_u8(c1));
    const uint16x8_t p23 = vpaddq_u16(vpaddlq_u8(c2), vpaddlq_u8(c3));
    return vpaddq_u16(p01, p23);
}

static inline void flush8(uint16x8_t s, uint32_t *acc, int add) {
    uint32x4_t lo = vmovl_u16(vget_low_u16(s)), hi = vmovl_high_u16(s);
    if (add) {
        lo = vaddq_u32(lo, vld1q_u32(acc));
        hi = vaddq_u32(hi, vld1q_u32(acc + 4));
    }
    vst1q_u32(acc, lo);
    vst1q_u32(acc + 4, hi);
}

/* Bit i of the result = byte i of the 32 all-ones/zero bytes (m0, m1), a "movemask": AND each
 * byte with its bit, then three pairwise adds sum each run of 8 bytes (disjoint bits). */
static inline uint32_t bits32(uint8x16_t m0, uint8x16_t m1) {
    static const uint8_t weights[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t wt = vld1q_u8(weights);
    uint8x16_t s = vpaddq_u8(vandq_u8(m0, wt), vandq_u8(m1, wt));
    s = vpaddq_u8(s, s);
    s = vpaddq_u8(s, s);
    return vgetq_lane_u32(vreinterpretq_u32_u8(s), 0);
}

/* 32 output bits: lane c of g[c / 4] (all-ones where channel c's pop > thr). */
static inline uint32_t movemask32(const uint32x4_t g[8]) {
    const uint16x8_t h0 = vuzp1q_u16(vreinterpretq_u16_u32(g[0]), vreinterpretq_u16_u32(g[1]));
    const uint16x8_t h1 = vuzp1q_u16(vreinterpretq_u16_u32(g[2]), vreinterpretq_u16_u32(g[3]));
    const uint16x8_t h2 = vuzp1q_u16(vreinterpretq_u16_u32(g[4]), vreinterpretq_u16_u32(g[5]));
    const uint16x8_t h3 = vuzp1q_u16(vreinterpretq_u16_u32(g[6]), vreinterpretq_u16_u32(g[7]));
    return bits32(vuzp1q_u8(vreinterpretq_u8_u16(h0), vreinterpretq_u8_u16(h1)),
                       vuzp1q_u8(vreinterpretq_u8_u16(h2), vreinterpretq_u8_u16(h3)));
}

/* pops of 8 channels (uint16) against their thresholds: signed compare like the scalar one */
static inline void gt8(uint16x8_t s, const int32_t *thr, uint32x4_t *g) {
    g[0] = vcgtq_s32(vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(s))), vld1q_s32(thr));
    g[1] = vcgtq_s32(vreinterpretq_s32_u32(vmovl_high_u16(s)), vld1q_s32(thr + 4));
}

/* The loop body shared by the four microkernels: X(k) is the broadcast activation word. */
#define MK_LOOP(X)                                                                                \
    const uint8x16_t z = vdupq_n_u8(0);                                                           \
    uint8x16_t c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, c6 = z, c7 = z;                    \
    uint8x16_t c8 = z, c9 = z, c10 = z, c11 = z, c12 = z, c13 = z, c14 = z, c15 = z;              \
    for (int k = 0; k < nk; k++, w += HYB_GROUP) {                                                \
        const uint64x2_t x = X(k);                                                                \
        const uint8_t *wb = (const uint8_t *)w;                                                   \
        uint8x16x4_t q = vld1q_u8_x4(wb);                                                         \
        c0 = vaddq_u8(c0, CNT(x, q.val[0]));                                                      \
        c1 = vaddq_u8(c1, CNT(x, q.val[1]));                                                      \
        c2 = vaddq_u8(c2, CNT(x, q.val[2]));                                                      \
        c3 = vaddq_u8(c3, CNT(x, q.val[3]));                                                      \
        q = vld1q_u8_x4(wb + 64);                                                                 \
        c4 = vaddq_u8(c4, CNT(x, q.val[0]));                                                      \
        c5 = vaddq_u8(c5, CNT(x, q.val[1]));                                                      \
        c6 = vaddq_u8(c6, CNT(x, q.val[2]));                                                      \
        c7 = vaddq_u8(c7, CNT(x, q.val[3]));                                                      \
        q = vld1q_u8_x4(wb + 128);                                                                \
        c8 = vaddq_u8(c8, CNT(x, q.val[0]));                                                      \
        c9 = vaddq_u8(c9, CNT(x, q.val[1]));                                                      \
        c10 = vaddq_u8(c10, CNT(x, q.val[2]));                                                    \
        c11 = vaddq_u8(c11, CNT(x, q.val[3]));                                                    \
        q = vld1q_u8_x4(wb + 192);                                                                \
        c12 = vaddq_u8(c12, CNT(x, q.val[0]));                                                    \
        c13 = vaddq_u8(c13, CNT(x, q.val[1]));                                                    \
        c14 = vaddq_u8(c14, CNT(x, q.val[2]));                                                    \
        c15 = vaddq_u8(c15, CNT(x, q.val[3]));                                                    \
    }

/* GCC's first scheduling pass hoists all 16 weight loads of a step above the adds and then
 * spills four counters to the stack in every step; without it every counter stays in a
 * register. */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_SCHED1 __attribute__((optimize("no-schedule-insns")))
#else
#define NO_SCHED1
#endif

#define CONTIG(k) vld1q_dup_u64(a + (k))
#define IND(k) vld1q_dup_u64(a[k])

#define FLUSH_ALL()                                                                               \
    do {                                                                                          \
        flush8(fold8(c0, c1, c2, c3), acc, add);                                                  \
        flush8(fold8(c4, c5, c6, c7), acc + 8, add);                                              \
        flush8(fold8(c8, c9, c10, c11), acc + 16, add);                                           \
        flush8(fold8(c12, c13, c14, c15), acc + 24, add);                                         \
    } while (0)

#define BITS_ALL()                                                                                \
    do {                                                                                          \
        uint32x4_t g[8];                                                                          \
        gt8(fold8(c0, c1, c2, c3), thr, g);                                                       \
        gt8(fold8(c4, c5, c6, c7), thr + 8, g + 2);                                               \
        gt8(fold8(c8, c9, c10, c11), thr + 16, g + 4);                                            \
        gt8(fold8(c12, c13, c14, c15), thr + 24, g + 6);                                          \
        return movemask32(g);                                                                     \
    } while (0)

NO_SCHED1 static void mk_neon_contig(const uint64_t *a, int nk, const uint64_t *w, uint32_t *acc,
                                     int add) {
    MK_LOOP(CONTIG)
    FLUSH_ALL();
}

NO_SCHED1 static void mk_neon_ind(const uint64_t *const *a, int nk, const uint64_t *w, uint32_t *acc,
                                  int add) {
    MK_LOOP(IND)
    FLUSH_ALL();
}

NO_SCHED1 static uint32_t mk_neon_contig_bits(const uint64_t *a, int nk, const uint64_t *w,
                                              const int32_t *thr) {
    MK_LOOP(CONTIG)
    BITS_ALL();
}

NO_SCHED1 static uint32_t mk_neon_ind_bits(const uint64_t *const *a, int nk, const uint64_t *w,
                                           const int32_t *thr) {
    MK_LOOP(IND)
    BITS_ALL();
}

static uint32_t thr_bits_neon(const uint32_t *pop, const int32_t *thr) {
    uint32x4_t g[8];
    for (int v = 0; v < 8; v++)
        g[v] = vcgtq_s32(vreinterpretq_s32_u32(vld1q_u32(pop + 4 * v)), vld1q_s32(thr + 4 * v));
    return movemask32(g);
}

/* 64 floats -> 64 sign bits (1 where x < 0; NaN and -0.0 compare false, as in the scalar
 * loop); *ok keeps all-ones lanes while no NaN was seen (NaN != NaN). */
static inline uint64_t sign64(const float *p, uint32x4_t *ok) {
    uint8x16_t b[4];
    for (int i = 0; i < 4; i++) {
        uint32x4_t m[4];
        for (int j = 0; j < 4; j++) {
            const float32x4_t v = vld1q_f32(p + 16 * i + 4 * j);
            *ok = vandq_u32(*ok, vceqq_f32(v, v));
            m[j] = vcltq_f32(v, vdupq_n_f32(0.0f));
        }
        const uint16x8_t h0 = vuzp1q_u16(vreinterpretq_u16_u32(m[0]), vreinterpretq_u16_u32(m[1]));
        const uint16x8_t h1 = vuzp1q_u16(vreinterpretq_u16_u32(m[2]), vreinterpretq_u16_u32(m[3]));
        b[i] = vuzp1q_u8(vreinterpretq_u8_u16(h0), vreinterpretq_u8_u16(h1));
    }
    return (uint64_t)bits32(b[0], b[1]) | (uint64_t)bits32(b[2], b[3]) << 32;
}

static int pack_rows_neon(const float *x, size_t rows, size_t k, uint64_t *out) {
    const size_t kw = hyb_words(k), full = k / 64;
    uint32x4_t ok = vdupq_n_u32(~0u);
    int tail_nan = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * k;
        uint64_t *o = out + r * kw;
        for (size_t w = 0; w < full; w++) o[w] = sign64(xr + 64 * w, &ok);
        if (full < kw) tail_nan |= hyb_pack_rows_scalar(xr + 64 * full, 1, k - 64 * full, o + full);
    }
    return tail_nan | (vminvq_u32(ok) == 0);
}

/* NCHW packing stays scalar: the image networks' first convolution usually takes the patch
 * path (network.c), which packs windows itself. */
const hyb_kernels hyb_kernels_neon = {
    "neon", 0, mk_neon_contig, mk_neon_ind, pack_rows_neon, hyb_pack_nchw_scalar, NULL,
    thr_bits_neon, mk_neon_contig_bits, mk_neon_ind_bits,
};
#endif
