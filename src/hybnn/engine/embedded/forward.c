/* Kernels of the C export (`hybnn export --format c`): portable C99, no libc, no allocation.
 *
 * Not part of the Python extension: hybnn.engine.c_export copies this text into every generated
 * NAME.c, after the model's switches HYB_C_ROWS (input rows, else NCHW images), HYB_C_CONV and
 * HYB_C_DENSE (which layer kinds the model has). Everything is static, so several exported
 * models link into one program. Defining HYB_C_PORTABLE selects the plain C popcount and fma
 * even where GCC has single-instruction builtins (the tests compile both).
 *
 * Bit layout, as in the engine (csrc/engine.h): bit j of word k holds value 64k+j of a row or of
 * a pixel's channels (NHWC); bit 1 = -1, bit 0 = +1, so x < 0 packs to 1 and x >= 0 (also -0.0)
 * to 0; bits past the real width are 0 in activations and weights and never count. An all-zero
 * word is a pixel of +1 values: the +1 padding of BinaryConv2d, read for taps outside the image.
 * Images are compared with the engine file's input shift instead of 0 (0.5 for "centered":
 * x < 0.5 packs to 1, the sign of x - 0.5, exactly as the engine packs them). Codes as Python's
 * codes() gives them are the other way round (1 = +1): hyb_pack_bits turns them into words.
 */

/* The builtin only where it is one instruction (x86 with -mpopcnt, aarch64): elsewhere GCC
 * calls libgcc's __popcountdi2, slower than the bit tricks below. A hyb_popcount(x) macro
 * defined before this file (e.g. by -include) replaces them all: a target's own instruction. */
#if defined(hyb_popcount)
#elif defined(__GNUC__) && !defined(HYB_C_PORTABLE) && (defined(__POPCNT__) || defined(__aarch64__))
#define hyb_popcount(x) ((unsigned)__builtin_popcountll(x))
#elif UINTPTR_MAX > 0xffffffffu && !defined(HYB_C_POPCOUNT32)
static unsigned hyb_popcount(uint64_t x) {
    x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
    x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
    x = (x + (x >> 4)) & UINT64_C(0x0f0f0f0f0f0f0f0f);
    return (unsigned)((x * UINT64_C(0x0101010101010101)) >> 56);
}
#else /* 32-bit CPUs (Cortex-M; HYB_C_POPCOUNT32 forces it): no 64-bit multiply; the halves'
       * 2-bit counts are summed (nibbles of at most 8), so one byte fold and one multiply
       * serve both. Inlined: the masks stay in registers. Of the popcounts measured on a
       * Cortex-M4 (bench/embedded.py: tables, libgcc's call, separate halves), the fewest
       * instructions per image. */
#if defined(__GNUC__)
__attribute__((always_inline)) static inline unsigned hyb_popcount(uint64_t x) {
#else
static unsigned hyb_popcount(uint64_t x) {
#endif
    uint32_t a = (uint32_t)x, b = (uint32_t)(x >> 32);
    a = a - ((a >> 1) & 0x55555555u);
    b = b - ((b >> 1) & 0x55555555u);
    a = (a & 0x33333333u) + ((a >> 2) & 0x33333333u) + (b & 0x33333333u) +
        ((b >> 2) & 0x33333333u);
    a = (a & 0x0f0f0f0fu) + ((a >> 4) & 0x0f0f0f0fu);
    return (unsigned)((a * 0x01010101u) >> 24);
}
#endif

#if defined(__GNUC__) && defined(__FP_FAST_FMAF) && !defined(HYB_C_PORTABLE)
#define hyb_fmaf __builtin_fmaf /* one instruction (aarch64, Cortex-M4F): no libm call */
#else
typedef union {
    double d;
    uint64_t u;
} hyb_f64;

/* a * b + c rounded once, like C99 fmaf, without libm. The product is exact in double
 * (24 + 24 bits); the sum is rounded to odd (its exact error from TwoSum decides), and a value
 * rounded to odd with 53 >= 24 + 2 bits rounds correctly to float (Boldo and Melquiond).
 * Assumes FLT_EVAL_METHOD 0 (any SSE, ARM or RISC-V target; not x87). */
static float hyb_fmaf(float a, float b, float c) {
    const double p = (double)a * (double)b, cd = (double)c;
    const double s = p + cd;
    const double t = s - p;
    const double err = (p - (s - t)) + (cd - t);
    hyb_f64 v;
    v.d = s;
    if (err != 0.0 && s - s == 0.0 && (v.u & 1u) == 0) /* inexact, finite, even: go odd */
        v.u = (err > 0.0) == (s > 0.0) ? v.u + 1 : v.u - 1;
    return (float)v.d;
}
#endif

/* Every output word is built in a register and stored once: no zeroing loops, which compilers
 * may turn into calls to memset. */
#if HYB_C_ROWS
/* Sign-pack k floats into (k + 63) / 64 words; returns nonzero if one is NaN. */
static int hyb_pack_rows(const float *x, size_t k, uint64_t *out) {
    int nan = 0;
    for (size_t w = 0; w * 64 < k; w++) {
        uint64_t bits = 0;
        for (size_t j = w * 64; j < k && j < w * 64 + 64; j++) {
            nan |= x[j] != x[j];
            bits |= (uint64_t)(x[j] < 0.0f) << (j % 64);
        }
        out[w] = bits;
    }
    return nan;
}

/* k codes, one byte a bit in the order of Python's codes() (nonzero = +1), into words. */
static void hyb_pack_bits(const uint8_t *bits, size_t k, uint64_t *out) {
    for (size_t w = 0; w * 64 < k; w++) {
        uint64_t word = 0;
        for (size_t j = w * 64; j < k && j < w * 64 + 64; j++)
            word |= (uint64_t)(bits[j] == 0) << (j % 64);
        out[w] = word;
    }
}
#else
/* Sign-pack one NCHW image (c planes of hw floats) into NHWC words, the sign of each value being
 * that of x - shift (bit 1 iff x < shift, which equals x - shift < 0 in IEEE arithmetic);
 * nonzero on NaN. */
static int hyb_pack_image(const float *x, size_t c, size_t hw, float shift, uint64_t *out) {
    int nan = 0;
    for (size_t p = 0; p < hw; p++)
        for (size_t w = 0; w * 64 < c; w++) {
            uint64_t bits = 0;
            for (size_t ch = w * 64; ch < c && ch < w * 64 + 64; ch++) {
                const float v = x[ch * hw + p];
                nan |= v != v;
                bits |= (uint64_t)(v < shift) << (ch % 64);
            }
            *out++ = bits;
        }
    return nan;
}
#endif

/* Nonzero if a bit past c values is set in the last word of any of `units` groups of cw words. */
static int hyb_pad_bits(const uint64_t *x, size_t units, size_t c) {
    const size_t cw = (c + 63) / 64;
    const uint64_t mask = c % 64 ? ~((UINT64_C(1) << (c % 64)) - 1) : 0;
    for (size_t u = 0; u < units; u++)
        if (x[u * cw + cw - 1] & mask) return 1;
    return 0;
}

#if HYB_C_CONV
/* Binary convolution on packed NHWC (c_w words per pixel), square kernel k, stride s, +1 padding
 * p; output bit o of a pixel is 1 iff popcount(window ^ weights[o]) > thr[o].
 * Weights: [o][ky][kx][c_w] words. */
static void hyb_conv(const uint64_t *in, uint64_t *out, const uint64_t *w, const int32_t *thr,
                     size_t c_w, size_t h, size_t wd, size_t o, size_t k, size_t s, size_t p,
                     size_t ho, size_t wo) {
    for (size_t oy = 0; oy < ho; oy++)
        for (size_t ox = 0; ox < wo; ox++) {
            /* a window inside the image needs no bounds checks */
            const int inside = oy * s >= p && ox * s >= p && oy * s - p + k <= h &&
                               ox * s - p + k <= wd;
            for (size_t o0 = 0; o0 < o; o0 += 64) {
                uint64_t bits = 0;
                for (size_t oc = o0; oc < o && oc < o0 + 64; oc++) {
                    const uint64_t *wt = w + oc * k * k * c_w;
                    uint32_t pop = 0;
                    if (inside) {
                        const uint64_t *a = in + ((oy * s - p) * wd + (ox * s - p)) * c_w;
                        for (size_t ky = 0; ky < k; ky++, a += wd * c_w, wt += k * c_w)
                            for (size_t i = 0; i < k * c_w; i++) pop += hyb_popcount(a[i] ^ wt[i]);
                    } else {
                        for (size_t ky = 0; ky < k; ky++) {
                            const size_t iy = oy * s + ky; /* row in the padded image */
                            for (size_t kx = 0; kx < k; kx++, wt += c_w) {
                                const size_t ix = ox * s + kx;
                                if (iy < p || ix < p || iy - p >= h || ix - p >= wd) { /* +1 */
                                    for (size_t c = 0; c < c_w; c++) pop += hyb_popcount(wt[c]);
                                    continue;
                                }
                                const uint64_t *a = in + ((iy - p) * wd + (ix - p)) * c_w;
                                for (size_t c = 0; c < c_w; c++) pop += hyb_popcount(a[c] ^ wt[c]);
                            }
                        }
                    }
                    bits |= (uint64_t)((int32_t)pop > thr[oc]) << (oc % 64);
                }
                *out++ = bits;
            }
        }
}
#endif

#if HYB_C_DENSE
/* Binary dense layer: output bit j is 1 iff popcount(in ^ weights[j]) > thr[j]. */
static void hyb_dense(const uint64_t *in, uint64_t *out, const uint64_t *w, const int32_t *thr,
                      size_t kw, size_t o) {
    for (size_t j0 = 0; j0 < o; j0 += 64) {
        uint64_t bits = 0;
        for (size_t j = j0; j < o && j < j0 + 64; j++, w += kw) {
            uint32_t pop = 0;
            for (size_t i = 0; i < kw; i++) pop += hyb_popcount(in[i] ^ w[i]);
            bits |= (uint64_t)((int32_t)pop > thr[j]) << (j % 64);
        }
        *out++ = bits;
    }
}
#endif

/* The float output layer, in the engine's order: d = K - 2 * popcount, z = alpha * d (float),
 * logit = fma(z, scale, shift). */
static void hyb_output(const uint64_t *in, float *logits, const uint64_t *w, const float *alpha,
                       const float *scale, const float *shift, size_t kw, int32_t kbits,
                       size_t o) {
    for (size_t j = 0; j < o; j++, w += kw) {
        uint32_t pop = 0;
        for (size_t i = 0; i < kw; i++) pop += hyb_popcount(in[i] ^ w[i]);
        const float z = alpha[j] * (float)(kbits - 2 * (int32_t)pop);
        logits[j] = hyb_fmaf(z, scale[j], shift[j]);
    }
}

/* Index of the first maximum. */
static int hyb_argmax(const float *x, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int)best;
}
