/* Kernels of an engine graph's C export (`hybnn export --format c` of a binary ResNet): portable
 * C99, no libc, no allocation. hybnn.engine.c_graph copies this text into the generated NAME.c
 * after forward.c's popcount, each kernel behind the switch HYB_G_<OP> of the ops the model has.
 *
 * Float tensors are one sample's NCHW floats; packed tensors the engine's NHWC words (bit 1 =
 * -1, bits past the channels 0, an all-zero word a pixel of +1). Every float operation is the
 * engine's, in its order (build with -ffp-contract=off, as HOST_FLAGS do): the sign of x + shift,
 * alpha * d, x * scale + shift, PReLU, add, max and average pooling give the engine's bits and
 * floats exactly; the float convolution, dense layer and global average sum in another order
 * than numpy's BLAS and pairwise sums, within float32 rounding of them (docs/engine.md). */

#if HYB_G_SIGN
/* Signs of x + shift (shift per channel, or none): bit 1 iff the float32 sum is < 0; nonzero
 * if a value is NaN. */
static int hyb_g_sign(const float *x, const float *shift, size_t c, size_t hw, uint64_t *out) {
    int nan = 0;
    for (size_t p = 0; p < hw; p++)
        for (size_t w = 0; w * 64 < c; w++) {
            uint64_t bits = 0;
            for (size_t ch = w * 64; ch < c && ch < w * 64 + 64; ch++) {
                const float v = shift ? x[ch * hw + p] + shift[ch] : x[ch * hw + p];
                nan |= v != v;
                bits |= (uint64_t)(v < 0.0f) << (ch % 64);
            }
            *out++ = bits;
        }
    return nan;
}
#endif

#if HYB_G_BCONV2D
/* popcount(window ^ weights) of one output channel at (oy, ox); taps outside the image are +1
 * (all-zero words). Weights: [ky][kx][c_w] words of that channel. */
static uint32_t hyb_g_window(const uint64_t *in, const uint64_t *wt, size_t c_w, size_t h,
                             size_t wd, size_t k, size_t s, size_t p, size_t oy, size_t ox) {
    uint32_t pop = 0;
    for (size_t ky = 0; ky < k; ky++) {
        const size_t iy = oy * s + ky; /* row in the padded image */
        for (size_t kx = 0; kx < k; kx++, wt += c_w) {
            const size_t ix = ox * s + kx;
            if (iy < p || ix < p || iy - p >= h || ix - p >= wd) {
                for (size_t c = 0; c < c_w; c++) pop += hyb_popcount(wt[c]);
                continue;
            }
            const uint64_t *a = in + ((iy - p) * wd + (ix - p)) * c_w;
            for (size_t c = 0; c < c_w; c++) pop += hyb_popcount(a[c] ^ wt[c]);
        }
    }
    return pop;
}
#endif

#if HYB_G_BCONV2D
/* Binary convolution: packed signs out (bit 1 iff popcount > thr, thr given) or NCHW floats
 * alpha * d with d = kbits - 2 * popcount (thr NULL). */
static void hyb_g_bconv(const uint64_t *in, const uint64_t *w, size_t c_w, size_t h, size_t wd,
                        size_t o, size_t k, size_t s, size_t p, size_t ho, size_t wo,
                        int32_t kbits, const int32_t *thr, const float *alpha, uint64_t *bits,
                        float *out) {
    for (size_t oy = 0; oy < ho; oy++)
        for (size_t ox = 0; ox < wo; ox++)
            for (size_t o0 = 0; o0 < o; o0 += 64) {
                uint64_t word = 0;
                for (size_t oc = o0; oc < o && oc < o0 + 64; oc++) {
                    const uint32_t pop = hyb_g_window(in, w + oc * k * k * c_w, c_w, h, wd, k, s,
                                                      p, oy, ox);
                    if (thr)
                        word |= (uint64_t)((int32_t)pop > thr[oc]) << (oc % 64);
                    else
                        out[(oc * ho + oy) * wo + ox] =
                            alpha[oc] * (float)(kbits - 2 * (int32_t)pop);
                }
                if (thr) *bits++ = word;
            }
}
#endif

#if HYB_G_BDENSE
/* Binary dense layer on kw packed words: signs or alpha * d, as hyb_g_bconv. */
static void hyb_g_bdense(const uint64_t *in, const uint64_t *w, size_t kw, size_t o,
                         int32_t kbits, const int32_t *thr, const float *alpha, uint64_t *bits,
                         float *out) {
    for (size_t j0 = 0; j0 < o; j0 += 64) {
        uint64_t word = 0;
        for (size_t j = j0; j < o && j < j0 + 64; j++, w += kw) {
            uint32_t pop = 0;
            for (size_t i = 0; i < kw; i++) pop += hyb_popcount(in[i] ^ w[i]);
            if (thr)
                word |= (uint64_t)((int32_t)pop > thr[j]) << (j % 64);
            else
                out[j] = alpha[j] * (float)(kbits - 2 * (int32_t)pop);
        }
        if (thr) *bits++ = word;
    }
}
#endif

#if HYB_G_CONV2D
/* Float convolution, zero padding: each output is the sum over (c, ky, kx) of w * x, then
 * + bias. Weights [o][c][k][k]. */
static void hyb_g_conv(const float *x, const float *w, const float *bias, size_t c, size_t h,
                       size_t wd, size_t o, size_t k, size_t s, size_t p, size_t ho, size_t wo,
                       float *out) {
    for (size_t oc = 0; oc < o; oc++)
        for (size_t oy = 0; oy < ho; oy++)
            for (size_t ox = 0; ox < wo; ox++) {
                float acc = 0.0f;
                const float *wt = w + oc * c * k * k;
                for (size_t ch = 0; ch < c; ch++)
                    for (size_t ky = 0; ky < k; ky++) {
                        const size_t iy = oy * s + ky;
                        for (size_t kx = 0; kx < k; kx++) {
                            const size_t ix = ox * s + kx;
                            const float v = wt[(ch * k + ky) * k + kx];
                            if (iy >= p && ix >= p && iy - p < h && ix - p < wd)
                                acc += v * x[(ch * h + iy - p) * wd + ix - p];
                        }
                    }
                out[(oc * ho + oy) * wo + ox] = bias ? acc + bias[oc] : acc;
            }
}
#endif

#if HYB_G_DENSE
/* Float dense layer on n inputs: sum of w * x, then + bias. */
static void hyb_g_dense(const float *x, const float *w, const float *bias, size_t n, size_t o,
                        float *out) {
    for (size_t j = 0; j < o; j++, w += n) {
        float acc = 0.0f;
        for (size_t i = 0; i < n; i++) acc += w[i] * x[i];
        out[j] = bias ? acc + bias[j] : acc;
    }
}
#endif

#if HYB_G_AFFINE
/* Per channel x * scale + shift (two roundings, no fma), or x + shift where scale is NULL. */
static void hyb_g_affine(const float *x, const float *scale, const float *shift, size_t c,
                         size_t hw, float *out) {
    for (size_t ch = 0; ch < c; ch++)
        for (size_t i = 0; i < hw; i++, x++)
            *out++ = scale ? *x * scale[ch] + shift[ch] : *x + shift[ch];
}
#endif

#if HYB_G_PRELU
/* Per channel PReLU: x if x > 0, else slope * x. */
static void hyb_g_prelu(const float *x, const float *slope, size_t c, size_t hw, float *out) {
    for (size_t ch = 0; ch < c; ch++)
        for (size_t i = 0; i < hw; i++, x++) *out++ = *x > 0.0f ? *x : slope[ch] * *x;
}
#endif

#if HYB_G_ADD
static void hyb_g_add(const float *a, const float *b, size_t n, float *out) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}
#endif

#if HYB_G_FLATTEN
static void hyb_g_copy(const float *x, size_t n, float *out) {
    for (size_t i = 0; i < n; i++) out[i] = x[i];
}
#endif

#if HYB_G_POOL
/* Max (avg 0) or average pooling of torch's windows: taps in the padding are skipped for the
 * max (-inf) and add 0 to the sum; the sum runs over the window row by row and is divided by
 * the window clipped to the padded input (count_include_pad) or to the input. */
static void hyb_g_pool(const float *x, size_t c, size_t h, size_t wd, size_t k, size_t s,
                       size_t p, size_t ho, size_t wo, int avg, int include_pad, float *out) {
    for (size_t ch = 0; ch < c; ch++, x += h * wd)
        for (size_t oy = 0; oy < ho; oy++)
            for (size_t ox = 0; ox < wo; ox++) {
                float acc = 0.0f;
                int first = 1;
                for (size_t ky = 0; ky < k; ky++)
                    for (size_t kx = 0; kx < k; kx++) {
                        const size_t iy = oy * s + ky, ix = ox * s + kx;
                        const int inside = iy >= p && ix >= p && iy - p < h && ix - p < wd;
                        const float v = inside ? x[(iy - p) * wd + ix - p] : 0.0f;
                        if (avg)
                            acc = first ? v : acc + v;
                        else if (inside && (first || v > acc))
                            acc = v, first = 0;
                        if (avg) first = 0;
                    }
                if (avg) {
                    const size_t y0 = oy * s, x0 = ox * s; /* window start in the padded image */
                    const size_t y1 = y0 + k < h + 2 * p ? y0 + k : h + 2 * p;
                    const size_t x1 = x0 + k < wd + 2 * p ? x0 + k : wd + 2 * p;
                    size_t ny = y1 - y0, nx = x1 - x0;
                    if (!include_pad) {
                        const size_t ya = y0 > p ? y0 : p, yb = y1 < h + p ? y1 : h + p;
                        const size_t xa = x0 > p ? x0 : p, xb = x1 < wd + p ? x1 : wd + p;
                        ny = yb - ya, nx = xb - xa;
                    }
                    acc = acc / (float)(ny * nx);
                }
                *out++ = acc;
            }
}
#endif

#if HYB_G_GLOBAL_AVGPOOL
/* Mean over hw values per channel. */
static void hyb_g_mean(const float *x, size_t c, size_t hw, float *out) {
    for (size_t ch = 0; ch < c; ch++) {
        float acc = 0.0f;
        for (size_t i = 0; i < hw; i++) acc += *x++;
        out[ch] = acc / (float)hw;
    }
}
#endif

/* Index of the first maximum. */
static int hyb_g_argmax(const float *x, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int)best;
}
