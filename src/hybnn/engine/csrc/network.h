/* A whole packed network: layers with weights in every ISA's layout, run in one C call. */
#ifndef HYBNN_NETWORK_H
#define HYBNN_NETWORK_H

#include "engine.h"

enum { HYB_CONV = 0, HYB_DENSE = 1, HYB_OUT = 2 };
enum { HYB_IN_FLOAT = 0, HYB_IN_PACKBITS = 1, HYB_IN_WORDS = 2 };
enum { HYB_OUT_LOGITS = 0, HYB_OUT_ARGMAX = 1, HYB_OUT_WORDS = 2, HYB_OUT_ACC = 3 };
/* hyb_net_run status */
/* HYB_ERR_SIZE: a buffer size for this batch overflows size_t (refused, nothing is run) */
enum { HYB_OK = 0, HYB_ERR_NOMEM = -1, HYB_ERR_SIZE = -2, HYB_ERR_NAN = 1, HYB_ERR_PADBITS = 2 };

typedef struct {
    int kind;
    size_t in_c, in_h, in_w, in_cw; /* conv input geometry (dense: in_c = in_bits, h = w = 1) */
    size_t kh, kw, stride, pad;
    size_t out_h, out_w, n_out, out_cw; /* out_cw: words per output pixel / row */
    size_t kbits, kwords, groups;       /* ±1 values and words per dot product */
    size_t in_size, out_size;           /* words per sample in and out */
    uint64_t *w_plain;                  /* [groups][kwords][32] */
    uint64_t *w_split;                  /* [groups][kwords][2][32] nibble planes */
    int32_t *thr; /* [groups*32]: bit = -1 iff popcount > thr (pad: INT32_MAX); NULL: none */
    int8_t *flip;                       /* [n_out]: +1, or -1 where weights were negated */
    float *alpha, *bn_a, *bn_b;         /* HYB_OUT: logit = fma(alpha * d, bn_a, bn_b) */
} hyb_layer;

typedef struct {
    int image;               /* input is NCHW images (else rows of in_bits) */
    size_t in_c, in_h, in_w; /* rows: in_c = bits, h = w = 1 */
    float in_shift;          /* image input: the signs are those of x - in_shift (0: of x) */
    size_t in_size;          /* words per packed input sample */
    size_t nlayers;
    hyb_layer *layers;
    /* First convolution with k*k*C <= 64 run on float input: each output pixel's whole window is
     * packed into one word (bit (ky*k + kx)*C + c), and the layer runs as a dense layer over
     * pixels. Saves k*k - 1 of every k*k popcounts when C is small (an image's 1-3 channels). */
    int has_patch;
    size_t patch_pixels;
    hyb_layer patch;
} hyb_net;

/* Build a layer's ISA layouts from rows [n_out][kwords] of packed weights; 0 on success.
 * The layer's geometry must be within the limits of engine.h (module.c checks it). */
int hyb_layer_prepare(hyb_layer *L, const uint64_t *rows);
void hyb_net_free(hyb_net *net);
/* Set up net->patch when the first layer qualifies; 0 on success (or not applicable). */
int hyb_net_prepare_patch(hyb_net *net);

/* x: n samples of the input kind; out: buffer of the output kind. Returns a status above. */
int hyb_net_run(const hyb_net *net, const void *x, int x_kind, size_t n, void *out, int out_kind,
                int threads);
/* Accumulators d (int32, NHWC for convolutions) of every layer into outs[l]. */
int hyb_net_trace(const hyb_net *net, const void *x, int x_kind, size_t n, int32_t **outs,
                  int threads);

#endif
