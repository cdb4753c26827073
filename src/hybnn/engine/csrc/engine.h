/* Shared declarations of the packed binary engine.
 *
 * Bit layout (see docs/engine.md): bit j of word k holds value 64k+j of a row (dense) or of a
 * pixel's channels (NHWC convolution); bit 1 = -1, bit 0 = +1 (sign(0) = +1). Bits past the real
 * width are 0 in activations and weights, so they XOR to 0 and never count; an all-zero word is
 * a pixel of +1, which is exactly the +1 padding of BinaryConv2d.
 */
#ifndef HYBNN_ENGINE_H
#define HYBNN_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define HYB_X86 1
#else
#define HYB_X86 0
#endif

#if defined(__aarch64__)
#define HYB_ARM64 1 /* NEON is part of the base aarch64 ISA: no run-time check */
#else
#define HYB_ARM64 0
#endif

enum { HYB_ISA_SCALAR = 0, HYB_ISA_AVX2 = 1, HYB_ISA_AVX512 = 2, HYB_ISA_NEON = 3, HYB_ISA_COUNT = 4 };

#define HYB_GROUP 32  /* output channels per microkernel call */
#define HYB_KBLOCK 31 /* words per microkernel call: the AVX2 kernel's 8-bit counters hold 31*8 */

/* Microkernel: acc[c] (+)= sum_k popcount(a_k ^ w[k][c]) for c < 32 and k < nk <= HYB_KBLOCK;
 * add = 0 stores instead of adding (the first K block: no zeroing pass over acc).
 * "contig" reads a_k at a + k*E, "ind" at ptr[k]; E = 2 for split kernels (nibble planes
 * lo = x & 0x0f.., hi = (x >> 4) & 0x0f.., weights [k][2][32]) and 1 otherwise ([k][32]). */
typedef void (*hyb_mk_contig_fn)(const uint64_t *a, int nk, const uint64_t *w, uint32_t *acc, int add);
typedef void (*hyb_mk_ind_fn)(const uint64_t *const *a, int nk, const uint64_t *w, uint32_t *acc,
                              int add);
/* Sign-pack rows of k floats into words(k) words each; returns nonzero if a NaN was seen. */
typedef int (*hyb_pack_rows_fn)(const float *x, size_t rows, size_t k, uint64_t *out);
/* Sign-pack NCHW planes into NHWC words (cw words per pixel); returns nonzero on NaN. */
typedef int (*hyb_pack_nchw_fn)(const float *x, size_t n, size_t c, size_t hw, uint64_t *out);
/* Split n words into (lo, hi) nibble pairs (split kernels only). */
typedef void (*hyb_split_fn)(const uint64_t *x, size_t n, uint64_t *out);
/* 32 output bits: bit c = pop[c] > thr[c] (signed compare; pops are < 2^30). */
typedef uint32_t (*hyb_thr_bits_fn)(const uint32_t *pop, const int32_t *thr);
/* Microkernel fused with the threshold compare, for a whole dot product of nk <= 31 words:
 * returns the 32 output bits. Optional (NULL: microkernel, then thr_bits). */
typedef uint32_t (*hyb_mk_bits_fn)(const uint64_t *const *a, int nk, const uint64_t *w,
                                   const int32_t *thr);
typedef uint32_t (*hyb_mk_contig_bits_fn)(const uint64_t *a, int nk, const uint64_t *w,
                                          const int32_t *thr);

typedef struct {
    const char *name;
    int split;
    hyb_mk_contig_fn mk_contig;
    hyb_mk_ind_fn mk_ind;
    hyb_pack_rows_fn pack_rows;
    hyb_pack_nchw_fn pack_nchw;
    hyb_split_fn split_words;
    hyb_thr_bits_fn thr_bits;
    hyb_mk_contig_bits_fn mk_contig_bits;
    hyb_mk_bits_fn mk_ind_bits;
} hyb_kernels;

extern const hyb_kernels hyb_kernels_scalar;
#if HYB_X86
extern const hyb_kernels hyb_kernels_avx2;
extern const hyb_kernels hyb_kernels_avx512;
#endif
#if HYB_ARM64
extern const hyb_kernels hyb_kernels_neon;
#endif

/* dispatch.c */
int hyb_isa_supported(int isa);
int hyb_detect_isa(void);
int hyb_get_isa(void);
int hyb_set_isa(int isa); /* 0 on success, -1 if the CPU lacks it */
const hyb_kernels *hyb_active(void);
const char *hyb_isa_name(int isa);

/* scalar helpers shared by every ISA (kernels_scalar.c) */
void hyb_pack_bytes(const uint8_t *codes, size_t rows, size_t nbits, uint64_t *out);
int hyb_pack_rows_scalar(const float *x, size_t rows, size_t k, uint64_t *out);
int hyb_pack_nchw_scalar(const float *x, size_t n, size_t c, size_t hw, uint64_t *out);
#if HYB_X86
int hyb_pack_nchw_avx2(const float *x, size_t n, size_t c, size_t hw, uint64_t *out);
#endif
uint32_t hyb_thr_bits_scalar(const uint32_t *pop, const int32_t *thr);
void hyb_maxpool(const uint64_t *x, size_t n, size_t h, size_t w, size_t cw, size_t k,
                 size_t stride, uint64_t *out);

static inline size_t hyb_words(size_t bits) { return (bits + 63) / 64; }

/* Geometry limits (mirrored by hybnn/engine/geometry.py, documented in docs/engine.md): every
 * dimension is in [1, HYB_MAX_DIM], and every count derived from a layer's geometry (values and
 * words per sample in and out, weight words, values per dot product) is at most
 * HYB_MAX_ELEMENTS. Sums and products of such counts then fit any 64-bit size_t. */
#define HYB_MAX_DIM (((size_t)1 << 24) - 1)
#define HYB_MAX_ELEMENTS ((size_t)1 << 26)

/* *r = a * b; returns 0 (and leaves *r alone) if the product overflows size_t. */
static inline int hyb_mul(size_t a, size_t b, size_t *r) {
#if defined(__GNUC__) || defined(__clang__)
    return !__builtin_mul_overflow(a, b, r);
#else
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *r = a * b;
    return 1;
#endif
}

/* *r = a * b * c, checked, and at most HYB_MAX_ELEMENTS; returns 0 otherwise. */
static inline int hyb_count(size_t a, size_t b, size_t c, size_t *r) {
    size_t ab;
    return hyb_mul(a, b, &ab) && hyb_mul(ab, c, r) && *r <= HYB_MAX_ELEMENTS;
}

/* threads.c: run fn(ctx, lo, hi) over [0, ntasks) split into nthreads contiguous ranges. */
typedef void (*hyb_range_fn)(void *ctx, size_t lo, size_t hi);
void hyb_parallel_for(int nthreads, size_t ntasks, hyb_range_fn fn, void *ctx);

/* float_ops.c: the fused float32 epilogue of a residual block (one pass per tile of pixels).
 * source: acc (n, hw, c) int32 dot products times alpha (c), or x (n, c, hw) float;
 * steps in order, per channel ch: AFFINE v*a+b; ADD v+other; ADD_AFFINE v+(other*a+b);
 * PRELU max(v,0)+a*min(v,0) (other: (n, c, hw) float). Writes out (n, c, hw) if not NULL, and
 * bits (n, hw, words(c)) = sign(v + shift) if not NULL (shift NULL: sign(v)).
 * Returns 0, 1 if a packed value was NaN, -1 if out of memory. */
enum { HYB_EW_AFFINE = 0, HYB_EW_ADD = 1, HYB_EW_ADD_AFFINE = 2, HYB_EW_PRELU = 3 };
#define HYB_EW_MAX_STEPS 16
typedef struct {
    int op;
    const float *a, *b, *other;
} hyb_ew_step;
typedef struct {
    size_t n, c, hw;
    const int32_t *acc;
    const float *alpha, *x;
    hyb_ew_step steps[HYB_EW_MAX_STEPS];
    int nsteps;
    float *out;
    const float *shift;
    uint64_t *bits;
} hyb_ew;
int hyb_epilogue(const hyb_ew *e, int nthreads);

/* float_ops.c: float32 convolution, NCHW, zero padding: x (n, c, h, w), wt (o, c, k, k), bias
 * (o) or NULL, out (n, o, ho, wo) with ho = (h + 2p - k) / s + 1 (wo alike); then, if scale is
 * not NULL, out * scale + shift per channel (a batch norm). Returns 0, or -1 if out of memory. */
typedef struct {
    size_t n, c, h, w, o, k, s, p, ho, wo;
    const float *x, *wt, *bias, *scale, *shift;
    float *out;
    int failed;
} hyb_conv;
int hyb_conv2d_f32(hyb_conv *cv, int nthreads);

/* float_ops.c: max (avg = 0) or average pooling of planes (h, w) into (ho, wo), torch's windows
 * (the caller computes ho and wo, ceil_mode included: every window starts inside the input
 * or its left/top padding, p <= k / 2). */
typedef struct {
    size_t planes, h, w, ho, wo, k, s, p;
    int avg, include_pad;
    const float *x;
    float *out;
} hyb_pool;
int hyb_pool2d_f32(const hyb_pool *pl, int nthreads); /* 0, or -1 if out of memory */

#endif
