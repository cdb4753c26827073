/* Forward pass of a packed network: pack the input, then per layer one parallel loop over
 * row tiles (dense) or output rows (convolution) with the fused epilogue (threshold -> packed
 * bits, or integer accumulators, or float logits). */
#include "network.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TILE 16 /* dense rows per task */
#define OXT 64  /* output pixels per conv pointer block */

static const uint64_t zero_words[2] = {0, 0};

/* A buffer of a * b items of `size` bytes (+1 byte: a zero count still gets a pointer), zeroed
 * if asked. NULL with *status HYB_ERR_SIZE when the size overflows, HYB_ERR_NOMEM when memory
 * is short. */
static void *alloc_items(size_t a, size_t b, size_t size, int zero, int *status) {
    size_t items, bytes;
    if (!hyb_mul(a, b, &items) || !hyb_mul(items, size, &bytes) || bytes == SIZE_MAX) {
        *status = HYB_ERR_SIZE;
        return NULL;
    }
    void *p = zero ? calloc(bytes + 1, 1) : malloc(bytes + 1);
    if (!p) *status = HYB_ERR_NOMEM;
    return p;
}

int hyb_layer_prepare(hyb_layer *L, const uint64_t *rows) {
    size_t n;
    int status = HYB_OK;
    if (!hyb_mul(L->groups * HYB_GROUP, L->kwords, &n)) return -1;
    L->w_plain = (uint64_t *)alloc_items(n, 1, sizeof(uint64_t), 1, &status);
    L->w_split = (uint64_t *)alloc_items(n, 2, sizeof(uint64_t), 1, &status);
    if (!L->w_plain || !L->w_split) return -1;
    const uint64_t m = 0x0f0f0f0f0f0f0f0fULL;
    for (size_t g = 0; g < L->groups; g++)
        for (size_t k = 0; k < L->kwords; k++)
            for (size_t c = 0; c < HYB_GROUP; c++) {
                const size_t ch = g * HYB_GROUP + c;
                const uint64_t v = ch < L->n_out ? rows[ch * L->kwords + k] : 0;
                L->w_plain[(g * L->kwords + k) * HYB_GROUP + c] = v;
                L->w_split[(g * L->kwords + k) * 2 * HYB_GROUP + c] = v & m;
                L->w_split[(g * L->kwords + k) * 2 * HYB_GROUP + HYB_GROUP + c] = (v >> 4) & m;
            }
    return 0;
}

void hyb_net_free(hyb_net *net) {
    if (!net) return;
    for (size_t l = 0; l < net->nlayers; l++) {
        hyb_layer *L = &net->layers[l];
        free(L->w_plain);
        free(L->w_split);
        free(L->thr);
        free(L->flip);
        free(L->alpha);
        free(L->bn_a);
        free(L->bn_b);
    }
    free(net->layers);
    net->layers = NULL;
    net->nlayers = 0;
    if (net->has_patch) {
        free(net->patch.w_plain);
        free(net->patch.w_split);
    }
    net->has_patch = 0;
}

int hyb_net_prepare_patch(hyb_net *net) {
    net->has_patch = 0;
    if (!net->image || net->nlayers == 0) return 0;
    const hyb_layer *L = &net->layers[0];
    if (L->kind != HYB_CONV || L->kbits > 64 || L->in_cw != 1) return 0;
    uint64_t *rows = (uint64_t *)calloc(L->n_out + 1, sizeof(uint64_t));
    if (!rows) return -1;
    const size_t taps = L->kh * L->kw;
    for (size_t o = 0; o < L->n_out; o++)
        for (size_t t = 0; t < taps; t++)
            for (size_t c = 0; c < L->in_c; c++)
                rows[o] |= ((L->w_plain[((o / HYB_GROUP) * L->kwords + t) * HYB_GROUP + o % HYB_GROUP] >> c) & 1)
                           << (t * L->in_c + c);
    hyb_layer *P = &net->patch;
    *P = *L;
    P->kind = HYB_DENSE;
    P->kwords = P->in_size = P->in_cw = 1;
    P->in_c = L->kbits, P->in_h = P->in_w = 1;
    P->out_h = P->out_w = 1, P->out_size = L->out_cw;
    P->w_plain = P->w_split = NULL;
    const int rc = hyb_layer_prepare(P, rows);
    free(rows);
    if (rc < 0) {
        free(P->w_plain);
        free(P->w_split);
        return -1;
    }
    net->patch_pixels = L->out_h * L->out_w;
    net->has_patch = 1;
    return 0;
}

/* ---- epilogue ------------------------------------------------------------------------ */

typedef struct {
    uint64_t *bits; /* packed output [pos][out_cw] (zeroed), or NULL */
    int32_t *acc;   /* accumulators [pos][n_out], or NULL */
    float *logits;  /* [pos][n_out], or NULL */
} hyb_targets;

static void epilogue(const hyb_layer *L, const hyb_kernels *K, const uint32_t *pop, size_t g,
                     size_t pos, const hyb_targets *t) {
    const size_t c0 = g * HYB_GROUP;
    const size_t nc = L->n_out - c0 < HYB_GROUP ? L->n_out - c0 : HYB_GROUP;
    const int32_t kb = (int32_t)L->kbits;
    if (t->bits) /* thr is padded to whole groups with INT32_MAX: pad bits stay 0 */
        t->bits[pos * L->out_cw + g / 2] |= (uint64_t)K->thr_bits(pop, L->thr + c0) << (32 * (g & 1));
    if (t->acc) {
        int32_t *restrict dst = t->acc + pos * L->n_out + c0;
        const int8_t *restrict flip = L->flip + c0;
        if (nc == HYB_GROUP) /* fixed trip count: vectorized */
            for (size_t c = 0; c < HYB_GROUP; c++) dst[c] = flip[c] * (kb - 2 * (int32_t)pop[c]);
        else
            for (size_t c = 0; c < nc; c++) dst[c] = flip[c] * (kb - 2 * (int32_t)pop[c]);
    }
    if (t->logits)
        for (size_t c = 0; c < nc; c++) {
            const float z = L->alpha[c0 + c] * (float)(kb - 2 * (int32_t)pop[c]);
            t->logits[pos * L->n_out + c0 + c] = fmaf(z, L->bn_a[c0 + c], L->bn_b[c0 + c]);
        }
}

/* ---- layer loops --------------------------------------------------------------------- */

typedef struct {
    const hyb_layer *L;
    const hyb_kernels *K;
    const uint64_t *act; /* packed (or split) input activations */
    size_t n;
    hyb_targets t;
    int fail;
} layer_ctx;

/* Bits-only output of a dot product that fits one K block: the fused microkernel applies. */
static int can_fuse(const layer_ctx *ctx) {
    return ctx->t.bits && !ctx->t.acc && !ctx->t.logits && ctx->L->kwords <= HYB_KBLOCK &&
           ctx->K->mk_ind_bits && ctx->K->mk_contig_bits;
}

static void dense_range(void *vctx, size_t lo, size_t hi) {
    layer_ctx *ctx = (layer_ctx *)vctx;
    const hyb_layer *L = ctx->L;
    const size_t e = ctx->K->split ? 2 : 1, kw = L->kwords;
    const uint64_t *wl = ctx->K->split ? L->w_split : L->w_plain;
    uint32_t acc[TILE][HYB_GROUP];
    const int fused = can_fuse(ctx);
    for (size_t tile = lo; tile < hi; tile++) {
        const size_t m0 = tile * TILE;
        const size_t mt = ctx->n - m0 < TILE ? ctx->n - m0 : TILE;
        for (size_t g = 0; g < L->groups; g++) {
            const uint64_t *wg = wl + g * kw * HYB_GROUP * e;
            if (fused) { /* one K block, bits only: compare inside the microkernel */
                for (size_t m = 0; m < mt; m++)
                    ctx->t.bits[(m0 + m) * L->out_cw + g / 2] |=
                        (uint64_t)ctx->K->mk_contig_bits(ctx->act + (m0 + m) * kw * e, (int)kw, wg,
                                                         L->thr + g * HYB_GROUP) << (32 * (g & 1));
                continue;
            }
            for (size_t k0 = 0; k0 < kw; k0 += HYB_KBLOCK) {
                const int nk = (int)(kw - k0 < HYB_KBLOCK ? kw - k0 : HYB_KBLOCK);
                for (size_t m = 0; m < mt; m++)
                    ctx->K->mk_contig(ctx->act + ((m0 + m) * kw + k0) * e, nk,
                                      wg + k0 * HYB_GROUP * e, acc[m], k0 > 0);
            }
            for (size_t m = 0; m < mt; m++) epilogue(L, ctx->K, acc[m], g, m0 + m, &ctx->t);
        }
    }
}

static void conv_range(void *vctx, size_t lo, size_t hi) {
    layer_ctx *ctx = (layer_ctx *)vctx;
    const hyb_layer *L = ctx->L;
    const size_t e = ctx->K->split ? 2 : 1, kw = L->kwords;
    const uint64_t *wl = ctx->K->split ? L->w_split : L->w_plain;
    const uint64_t **ptrs = (const uint64_t **)malloc(OXT * kw * sizeof(*ptrs));
    size_t *off = (size_t *)malloc(kw * sizeof(*off)); /* tap word offsets inside the image */
    uint32_t(*acc)[HYB_GROUP] = malloc(OXT * sizeof(*acc));
    if (!ptrs || !acc || !off) {
        free(ptrs);
        free(off);
        free(acc);
        __atomic_store_n(&ctx->fail, 1, __ATOMIC_RELAXED);
        return;
    }
    const int fused = can_fuse(ctx);
    for (size_t ky = 0, i = 0; ky < L->kh; ky++)
        for (size_t kx = 0; kx < L->kw; kx++)
            for (size_t c = 0; c < L->in_cw; c++) off[i++] = e * ((ky * L->in_w + kx) * L->in_cw + c);
    for (size_t r = lo; r < hi; r++) {
        const size_t n = r / L->out_h, oy = r % L->out_h;
        const long iy0 = (long)(oy * L->stride) - (long)L->pad;
        const uint64_t *img = ctx->act + e * n * L->in_h * L->in_w * L->in_cw;
        for (size_t ox0 = 0; ox0 < L->out_w; ox0 += OXT) {
            const size_t ot = L->out_w - ox0 < OXT ? L->out_w - ox0 : OXT;
            for (size_t j = 0; j < ot; j++) {
                const uint64_t **p = ptrs + j * kw;
                const long ix0 = (long)((ox0 + j) * L->stride) - (long)L->pad;
                if (iy0 >= 0 && ix0 >= 0 && iy0 + (long)L->kh <= (long)L->in_h &&
                    ix0 + (long)L->kw <= (long)L->in_w) { /* window inside the image */
                    const uint64_t *base = img + e * (((size_t)iy0 * L->in_w + (size_t)ix0) * L->in_cw);
                    for (size_t i = 0; i < kw; i++) p[i] = base + off[i];
                    continue;
                }
                for (size_t ky = 0; ky < L->kh; ky++)
                    for (size_t kx = 0; kx < L->kw; kx++) {
                        /* windows at the border read the +1 padding as zero words */
                        const long iy = iy0 + (long)ky, ix = ix0 + (long)kx;
                        const int inside = iy >= 0 && ix >= 0 && iy < (long)L->in_h && ix < (long)L->in_w;
                        const uint64_t *px = inside ? img + e * (((size_t)iy * L->in_w + (size_t)ix) * L->in_cw) : NULL;
                        for (size_t c = 0; c < L->in_cw; c++) *p++ = inside ? px + e * c : zero_words;
                    }
            }
            for (size_t g = 0; g < L->groups; g++) {
                const uint64_t *wg = wl + g * kw * HYB_GROUP * e;
                if (fused) {
                    uint64_t *dst = ctx->t.bits + ((n * L->out_h + oy) * L->out_w + ox0) * L->out_cw + g / 2;
                    for (size_t j = 0; j < ot; j++)
                        dst[j * L->out_cw] |= (uint64_t)ctx->K->mk_ind_bits(ptrs + j * kw, (int)kw, wg,
                                                                          L->thr + g * HYB_GROUP)
                                              << (32 * (g & 1));
                    continue;
                }
                for (size_t k0 = 0; k0 < kw; k0 += HYB_KBLOCK) {
                    const int nk = (int)(kw - k0 < HYB_KBLOCK ? kw - k0 : HYB_KBLOCK);
                    for (size_t j = 0; j < ot; j++)
                        ctx->K->mk_ind(ptrs + j * kw + k0, nk, wg + k0 * HYB_GROUP * e, acc[j], k0 > 0);
                }
                for (size_t j = 0; j < ot; j++)
                    epilogue(L, ctx->K, acc[j], g, (n * L->out_h + oy) * L->out_w + ox0 + j, &ctx->t);
            }
        }
    }
    free(ptrs);
    free(off);
    free(acc);
}

/* ---- input packing and splitting ------------------------------------------------------- */

typedef struct {
    const hyb_net *net;
    const hyb_kernels *K;
    const void *x;
    int x_kind;
    uint64_t *out;
    int nan, fail;
} pack_ctx;

/* One word per output pixel of the first convolution: its whole k x k x C window. The signs (of
 * x - shift) go first into a byte image with a zero (+1) border, so the window loop has no bounds checks. */
static int pack_patches(const hyb_layer *L, const float *x, size_t n, float shift,
                        uint64_t *out) {
    const size_t hw = L->in_h * L->in_w, c = L->in_c;
    const size_t ph = L->in_h + 2 * L->pad, pw = L->in_w + 2 * L->pad;
    uint8_t *neg = (uint8_t *)calloc(ph * pw * c + 1, 1);
    if (!neg) return -1;
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        const float *img = x + i * c * hw;
        for (size_t ch = 0; ch < c; ch++)
            for (size_t y = 0; y < L->in_h; y++) {
                const float *row = img + ch * hw + y * L->in_w;
                uint8_t *dst = neg + ((y + L->pad) * pw + L->pad) * c + ch;
                for (size_t xx = 0; xx < L->in_w; xx++) {
                    nan |= row[xx] != row[xx];
                    dst[xx * c] = row[xx] < shift; /* x - shift < 0 exactly when x < shift */
                }
            }
        for (size_t oy = 0; oy < L->out_h; oy++)
            for (size_t ox = 0; ox < L->out_w; ox++) {
                uint64_t word = 0;
                size_t bit = 0;
                for (size_t ky = 0; ky < L->kh; ky++) {
                    const uint8_t *src = neg + ((oy * L->stride + ky) * pw + ox * L->stride) * c;
                    for (size_t j = 0; j < L->kw * c; j++) word |= (uint64_t)src[j] << bit++;
                }
                *out++ = word;
            }
    }
    free(neg);
    return nan;
}

static void patch_range(void *vctx, size_t lo, size_t hi) {
    pack_ctx *ctx = (pack_ctx *)vctx;
    const hyb_layer *L = &ctx->net->layers[0];
    const size_t per = L->in_c * L->in_h * L->in_w, pix = L->out_h * L->out_w;
    const int status = pack_patches(L, (const float *)ctx->x + lo * per, hi - lo, ctx->net->in_shift,
                                    ctx->out + lo * pix);
    if (status) __atomic_store_n(status < 0 ? &ctx->fail : &ctx->nan, 1, __ATOMIC_RELAXED);
}

static void pack_range(void *vctx, size_t lo, size_t hi) {
    pack_ctx *ctx = (pack_ctx *)vctx;
    const hyb_net *net = ctx->net;
    uint64_t *out = ctx->out + lo * net->in_size;
    int nan = 0;
    if (ctx->x_kind == HYB_IN_PACKBITS) {
        const size_t nbytes = (net->in_c + 7) / 8;
        hyb_pack_bytes((const uint8_t *)ctx->x + lo * nbytes, hi - lo, net->in_c, out);
    } else if (net->image) {
        const size_t per = net->in_c * net->in_h * net->in_w;
        const float *x = (const float *)ctx->x + lo * per;
        float *shifted = NULL;
        if (net->in_shift != 0.0f) { /* the signs of x - shift, computed as torch computes them */
            shifted = (float *)malloc((hi - lo) * per * sizeof(float));
            if (!shifted) {
                __atomic_store_n(&ctx->fail, 1, __ATOMIC_RELAXED);
                return;
            }
            for (size_t i = 0; i < (hi - lo) * per; i++) shifted[i] = x[i] - net->in_shift;
            x = shifted;
        }
        nan = ctx->K->pack_nchw(x, hi - lo, net->in_c, net->in_h * net->in_w, out);
        free(shifted);
    } else {
        nan = ctx->K->pack_rows((const float *)ctx->x + lo * net->in_c, hi - lo, net->in_c, out);
    }
    if (nan) __atomic_store_n(&ctx->nan, 1, __ATOMIC_RELAXED);
}

typedef struct {
    const hyb_kernels *K;
    const uint64_t *x;
    uint64_t *out;
    size_t per;
} split_ctx;

static void split_range(void *vctx, size_t lo, size_t hi) {
    split_ctx *ctx = (split_ctx *)vctx;
    ctx->K->split_words(ctx->x + lo * ctx->per, (hi - lo) * ctx->per, ctx->out + 2 * lo * ctx->per);
}

/* Pad bits of caller-packed words must be 0, or they would count as mismatches. module.c
 * checked that x holds n * in_size >= n * in_h * in_w * cw words. */
static int check_pad_bits(const hyb_net *net, const uint64_t *x, size_t n) {
    const size_t cw = hyb_words(net->in_c), rem = net->in_c % 64;
    if (rem == 0) return 0;
    const uint64_t mask = ~(((uint64_t)1 << rem) - 1);
    const size_t units = n * net->in_h * net->in_w; /* pixels (rows: one unit per sample) */
    for (size_t u = 0; u < units; u++)
        if (x[u * cw + cw - 1] & mask) return 1;
    return 0;
}

/* ---- driver ---------------------------------------------------------------------------- */

static int run_layer(const hyb_layer *L, const hyb_kernels *K, const uint64_t *in, size_t n,
                     const hyb_targets *t, int threads) {
    const uint64_t *act = in;
    uint64_t *split = NULL;
    size_t rows;
    int status = HYB_OK;
    if (!hyb_mul(n, L->out_h, &rows)) return HYB_ERR_SIZE;
    if (K->split) {
        split = (uint64_t *)alloc_items(n, 2 * L->in_size, sizeof(uint64_t), 0, &status);
        if (!split) return status;
        split_ctx sc = {K, in, split, L->in_size};
        hyb_parallel_for(threads, n, split_range, &sc);
        act = split;
    }
    layer_ctx ctx = {L, K, act, n, *t, 0};
    if (L->kind == HYB_CONV)
        hyb_parallel_for(threads, rows, conv_range, &ctx);
    else
        hyb_parallel_for(threads, (n + TILE - 1) / TILE, dense_range, &ctx);
    free(split);
    return ctx.fail ? HYB_ERR_NOMEM : HYB_OK;
}

static int forward(const hyb_net *net, const void *x, int x_kind, size_t n, int threads,
                   int32_t **trace, void *out, int out_kind) {
    const hyb_kernels *K = hyb_active();
    uint64_t *owned = NULL;
    const uint64_t *cur;
    int status = HYB_OK;
    const int patch = net->has_patch && x_kind == HYB_IN_FLOAT;
    if (x_kind == HYB_IN_WORDS) {
        if (check_pad_bits(net, (const uint64_t *)x, n)) return HYB_ERR_PADBITS;
        cur = (const uint64_t *)x;
    } else {
        const size_t per = patch ? net->patch_pixels : net->in_size;
        owned = (uint64_t *)alloc_items(n, per, sizeof(uint64_t), 0, &status);
        if (!owned) return status;
        pack_ctx pc = {net, K, x, x_kind, owned, 0, 0};
        hyb_parallel_for(threads, n, patch ? patch_range : pack_range, &pc);
        if (pc.nan || pc.fail) {
            free(owned);
            return pc.fail ? HYB_ERR_NOMEM : HYB_ERR_NAN;
        }
        cur = owned;
    }
    float *scratch_logits = NULL;
    for (size_t l = 0; l < net->nlayers && status == HYB_OK; l++) {
        const hyb_layer *L = &net->layers[l];
        const int last = l + 1 == net->nlayers;
        hyb_targets t = {NULL, trace ? trace[l] : NULL, NULL};
        uint64_t *next = NULL;
        if (!last) {
            next = (uint64_t *)alloc_items(n, L->out_size, sizeof(uint64_t), 1, &status);
            if (!next) break;
            t.bits = next;
        } else if (!trace) {
            if (out_kind == HYB_OUT_WORDS) { /* module.c checked out holds n * out_size words */
                memset(out, 0, n * L->out_size * sizeof(uint64_t));
                t.bits = (uint64_t *)out;
            } else if (out_kind == HYB_OUT_ACC) {
                t.acc = (int32_t *)out;
            } else if (out_kind == HYB_OUT_LOGITS) {
                t.logits = (float *)out;
            } else {
                scratch_logits = (float *)alloc_items(n, L->n_out, sizeof(float), 0, &status);
                if (!scratch_logits) break;
                t.logits = scratch_logits;
            }
        }
        size_t rows;
        if (l == 0 && patch) /* dense over the packed windows: one row per output pixel */
            status = hyb_mul(n, net->patch_pixels, &rows)
                         ? run_layer(&net->patch, K, cur, rows, &t, threads)
                         : HYB_ERR_SIZE;
        else
            status = run_layer(L, K, cur, n, &t, threads);
        free(owned);
        owned = next;
        cur = next;
        if (last && status == HYB_OK && out_kind == HYB_OUT_ARGMAX && !trace) {
            int64_t *idx = (int64_t *)out;
            for (size_t i = 0; i < n; i++) {
                const float *row = scratch_logits + i * L->n_out;
                size_t best = 0;
                for (size_t c = 1; c < L->n_out; c++)
                    if (row[c] > row[best]) best = c;
                idx[i] = (int64_t)best;
            }
        }
    }
    free(owned);
    free(scratch_logits);
    return status;
}

int hyb_net_run(const hyb_net *net, const void *x, int x_kind, size_t n, void *out, int out_kind,
                int threads) {
    if (n == 0) return HYB_OK;
    return forward(net, x, x_kind, n, threads, NULL, out, out_kind);
}

int hyb_net_trace(const hyb_net *net, const void *x, int x_kind, size_t n, int32_t **outs,
                  int threads) {
    if (n == 0) return HYB_OK;
    return forward(net, x, x_kind, n, threads, outs, NULL, HYB_OUT_ACC);
}
