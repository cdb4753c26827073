/* CPython bindings of hybnn.engine._kernels (plain C API and the buffer protocol; no numpy
 * headers). Python validates shapes first; every entry point here checks again, with overflow
 * checked arithmetic, that the geometry is within the limits of engine.h and that each buffer
 * holds exactly the items the geometry needs, so a wrong call raises ValueError instead of
 * reading past a buffer. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "network.h"

/* ---- buffers ------------------------------------------------------------------------- */

typedef enum { F32, U64, I64, I32, U8, I8 } dkind;

static int kind_ok(const Py_buffer *v, dkind k) {
    const char *f = v->format ? v->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (f[0] == 0 || f[1] != 0) return 0;
    switch (k) {
    case F32: return v->itemsize == 4 && f[0] == 'f';
    case U64: return v->itemsize == 8 && (f[0] == 'Q' || f[0] == 'L');
    case I64: return v->itemsize == 8 && (f[0] == 'q' || f[0] == 'l');
    case I32: return v->itemsize == 4 && (f[0] == 'i' || f[0] == 'l');
    case U8: return v->itemsize == 1 && f[0] == 'B';
    case I8: return v->itemsize == 1 && f[0] == 'b';
    }
    return 0;
}

static const char *kind_name(dkind k) {
    static const char *names[] = {"float32", "uint64", "int64", "int32", "uint8", "int8"};
    return names[k];
}

/* Get a C-contiguous buffer of kind k holding exactly count items (count < 0: any). */
static int get_buf(PyObject *obj, Py_buffer *v, dkind k, Py_ssize_t count, int writable,
                   const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, v, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s %s array", what,
                     writable ? " writable" : "", kind_name(k));
        return -1;
    }
    if (!kind_ok(v, k)) {
        PyErr_Format(PyExc_ValueError, "%s must have dtype %s (got format '%s')", what,
                     kind_name(k), v->format ? v->format : "B");
        PyBuffer_Release(v);
        return -1;
    }
    if (count >= 0 && v->len / v->itemsize != count) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd items, expected %zd", what,
                     v->len / v->itemsize, count);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

/* a * b as a buffer's item count: checked, and at most 2^46 (far below PY_SSIZE_T_MAX) */
static int mul_ok(size_t a, size_t b, size_t *r) {
    return hyb_mul(a, b, r) && *r <= ((size_t)1 << 46);
}

/* ---- ISA ------------------------------------------------------------------------------- */

static PyObject *py_isa(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(hyb_isa_name(hyb_get_isa()));
}

static PyObject *py_detect_isa(PyObject *self, PyObject *noargs) {
    return PyUnicode_FromString(hyb_isa_name(hyb_detect_isa()));
}

static PyObject *py_supported_isas(PyObject *self, PyObject *noargs) {
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (int i = 0; i < HYB_ISA_COUNT; i++)
        if (hyb_isa_supported(i)) {
            PyObject *s = PyUnicode_FromString(hyb_isa_name(i));
            if (!s || PyList_Append(out, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(s);
        }
    return out;
}

static PyObject *py_set_isa(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name) return NULL;
    for (int i = 0; i < HYB_ISA_COUNT; i++)
        if (strcmp(name, hyb_isa_name(i)) == 0) {
            if (hyb_set_isa(i) < 0) {
                PyErr_Format(PyExc_ValueError, "this CPU does not support the %s kernels", name);
                return NULL;
            }
            Py_RETURN_NONE;
        }
    PyErr_Format(PyExc_ValueError, "unknown ISA %R; choose scalar, avx2, avx512 or neon", arg);
    return NULL;
}

/* ---- packing and pooling ---------------------------------------------------------------- */

static PyObject *py_pack_rows(PyObject *self, PyObject *args) {
    PyObject *xo, *oo;
    Py_ssize_t rows, k;
    if (!PyArg_ParseTuple(args, "OOnn", &xo, &oo, &rows, &k)) return NULL;
    size_t nin, nout;
    if (rows < 0 || k <= 0 || !mul_ok((size_t)rows, (size_t)k, &nin) ||
        !mul_ok((size_t)rows, hyb_words((size_t)k), &nout))
        return PyErr_Format(PyExc_ValueError, "bad shape (%zd, %zd)", rows, k);
    Py_buffer x, o;
    if (get_buf(xo, &x, F32, (Py_ssize_t)nin, 0, "x") < 0) return NULL;
    if (get_buf(oo, &o, U64, (Py_ssize_t)nout, 1, "out") < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    int nan;
    const hyb_kernels *K = hyb_active();
    Py_BEGIN_ALLOW_THREADS nan = K->pack_rows((const float *)x.buf, (size_t)rows, (size_t)k, (uint64_t *)o.buf);
    Py_END_ALLOW_THREADS PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    return PyBool_FromLong(nan);
}

static PyObject *py_pack_nchw(PyObject *self, PyObject *args) {
    PyObject *xo, *oo;
    Py_ssize_t n, c, hw;
    if (!PyArg_ParseTuple(args, "OOnnn", &xo, &oo, &n, &c, &hw)) return NULL;
    size_t a, b, nin, nout;
    if (n < 0 || c <= 0 || hw <= 0 || !mul_ok((size_t)n, (size_t)c, &a) || !mul_ok(a, (size_t)hw, &nin) ||
        !mul_ok((size_t)n, (size_t)hw, &b) || !mul_ok(b, hyb_words((size_t)c), &nout))
        return PyErr_Format(PyExc_ValueError, "bad shape");
    Py_buffer x, o;
    if (get_buf(xo, &x, F32, (Py_ssize_t)nin, 0, "x") < 0) return NULL;
    if (get_buf(oo, &o, U64, (Py_ssize_t)nout, 1, "out") < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    int nan;
    const hyb_kernels *K = hyb_active();
    Py_BEGIN_ALLOW_THREADS nan = K->pack_nchw((const float *)x.buf, (size_t)n, (size_t)c, (size_t)hw, (uint64_t *)o.buf);
    Py_END_ALLOW_THREADS PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    return PyBool_FromLong(nan);
}

static PyObject *py_pack_bytes(PyObject *self, PyObject *args) {
    PyObject *xo, *oo;
    Py_ssize_t rows, nbits;
    if (!PyArg_ParseTuple(args, "OOnn", &xo, &oo, &rows, &nbits)) return NULL;
    size_t nin, nout;
    if (rows < 0 || nbits <= 0 || !mul_ok((size_t)rows, ((size_t)nbits + 7) / 8, &nin) ||
        !mul_ok((size_t)rows, hyb_words((size_t)nbits), &nout))
        return PyErr_Format(PyExc_ValueError, "bad shape");
    Py_buffer x, o;
    if (get_buf(xo, &x, U8, (Py_ssize_t)nin, 0, "codes") < 0) return NULL;
    if (get_buf(oo, &o, U64, (Py_ssize_t)nout, 1, "out") < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS hyb_pack_bytes((const uint8_t *)x.buf, (size_t)rows, (size_t)nbits, (uint64_t *)o.buf);
    Py_END_ALLOW_THREADS PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    Py_RETURN_NONE;
}

static PyObject *py_maxpool(PyObject *self, PyObject *args) {
    PyObject *xo, *oo;
    Py_ssize_t n, h, w, cw, k, s;
    if (!PyArg_ParseTuple(args, "OOnnnnnn", &xo, &oo, &n, &h, &w, &cw, &k, &s)) return NULL;
    if (n < 0 || h <= 0 || w <= 0 || cw <= 0 || k <= 0 || s <= 0 || k > h || k > w)
        return PyErr_Format(PyExc_ValueError, "bad pooling geometry");
    size_t a, b, nin, nout;
    const size_t ho = (size_t)((h - k) / s + 1), wo = (size_t)((w - k) / s + 1);
    if (!mul_ok((size_t)n, (size_t)h, &a) || !mul_ok(a, (size_t)w, &b) || !mul_ok(b, (size_t)cw, &nin) ||
        !mul_ok((size_t)n, ho, &a) || !mul_ok(a, wo, &b) || !mul_ok(b, (size_t)cw, &nout))
        return PyErr_Format(PyExc_ValueError, "bad shape");
    Py_buffer x, o;
    if (get_buf(xo, &x, U64, (Py_ssize_t)nin, 0, "x") < 0) return NULL;
    if (get_buf(oo, &o, U64, (Py_ssize_t)nout, 1, "out") < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS hyb_maxpool((const uint64_t *)x.buf, (size_t)n, (size_t)h, (size_t)w, (size_t)cw,
                                       (size_t)k, (size_t)s, (uint64_t *)o.buf);
    Py_END_ALLOW_THREADS PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    Py_RETURN_NONE;
}

/* ---- Network ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD hyb_net net;
} NetworkObject;

static void Network_dealloc(NetworkObject *self) {
    hyb_net_free(&self->net);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* copy a buffer of kind k and exactly count items into fresh memory */
static void *copy_array(PyObject *obj, dkind k, size_t count, const char *what) {
    Py_buffer v;
    if (get_buf(obj, &v, k, (Py_ssize_t)count, 0, what) < 0) return NULL;
    void *mem = malloc((size_t)v.len + 1);
    if (!mem) {
        PyBuffer_Release(&v);
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(mem, v.buf, (size_t)v.len);
    PyBuffer_Release(&v);
    return mem;
}

#define DIM_OK(x) ((x) > 0 && (size_t)(x) <= HYB_MAX_DIM)
#define COUNT_OK(x) ((x) > 0 && (size_t)(x) <= HYB_MAX_ELEMENTS)

static int geometry_error(const char *what) {
    PyErr_Format(PyExc_ValueError, "%s (limits: every dimension 1..%zu, every derived count <= %zu)",
                 what, HYB_MAX_DIM, HYB_MAX_ELEMENTS);
    return -1;
}

/* ("conv", in_c, in_h, in_w, out_c, k, stride, pad, weights, thresholds|None, flips)
 * ("dense", in_bits, in_words, out_n, weights, thresholds|None, flips)
 * ("out", in_bits, in_words, out_n, weights, alpha, bn_a, bn_b)
 * in_words may exceed words(in_bits) after a convolution (per-pixel channel padding). */
static int parse_layer(PyObject *spec, hyb_layer *L, size_t prev_c, size_t prev_h, size_t prev_w,
                       size_t prev_size) {
    memset(L, 0, sizeof(*L));
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 1) {
        PyErr_SetString(PyExc_ValueError, "layer spec must be a tuple");
        return -1;
    }
    const char *kind = PyUnicode_AsUTF8(PyTuple_GET_ITEM(spec, 0));
    if (!kind) return -1;
    PyObject *wo = NULL, *to = NULL, *fo = NULL, *ao = NULL, *bao = NULL, *bbo = NULL;
    uint64_t *rows = NULL;
    if (strcmp(kind, "conv") == 0) {
        Py_ssize_t ic, ih, iw, oc, k, st, pd;
        const char *s;
        if (!PyArg_ParseTuple(spec, "snnnnnnnOOO", &s, &ic, &ih, &iw, &oc, &k, &st, &pd, &wo, &to, &fo)) return -1;
        /* all dims < 2^24 and pad < k: the sums below cannot overflow */
        if (!DIM_OK(ic) || !DIM_OK(ih) || !DIM_OK(iw) || !DIM_OK(oc) || !DIM_OK(k) || !DIM_OK(st))
            return geometry_error("convolution dimension out of range");
        if (pd < 0 || pd >= k) return geometry_error("convolution padding must be in [0, kernel_size)");
        if (ih + 2 * pd < k || iw + 2 * pd < k)
            return geometry_error("convolution kernel is larger than the padded input");
        L->kind = HYB_CONV;
        L->in_c = (size_t)ic, L->in_h = (size_t)ih, L->in_w = (size_t)iw, L->in_cw = hyb_words(L->in_c);
        L->kh = L->kw = (size_t)k, L->stride = (size_t)st, L->pad = (size_t)pd;
        L->out_h = (L->in_h + 2 * L->pad - L->kh) / L->stride + 1;
        L->out_w = (L->in_w + 2 * L->pad - L->kw) / L->stride + 1;
        L->n_out = (size_t)oc, L->out_cw = hyb_words(L->n_out);
        size_t values;
        if (!hyb_count(L->kh, L->kw, L->in_c, &L->kbits) || !hyb_count(L->kh, L->kw, L->in_cw, &L->kwords) ||
            !hyb_count(L->in_h, L->in_w, L->in_c, &values) || !hyb_count(L->in_h, L->in_w, L->in_cw, &L->in_size) ||
            !hyb_count(L->out_h, L->out_w, L->n_out, &values) ||
            !hyb_count(L->out_h, L->out_w, L->out_cw, &L->out_size))
            return geometry_error("convolution too large");
    } else if (strcmp(kind, "dense") == 0 || strcmp(kind, "out") == 0) {
        Py_ssize_t ib, iwd, on;
        const char *s;
        int ok = strcmp(kind, "dense") == 0
                     ? PyArg_ParseTuple(spec, "snnnOOO", &s, &ib, &iwd, &on, &wo, &to, &fo)
                     : PyArg_ParseTuple(spec, "snnnOOOO", &s, &ib, &iwd, &on, &wo, &ao, &bao, &bbo);
        if (!ok) return -1;
        if (!COUNT_OK(ib) || !COUNT_OK(iwd) || !DIM_OK(on)) return geometry_error("dense dimension out of range");
        if ((size_t)iwd < hyb_words((size_t)ib)) return geometry_error("dense in_words does not hold in_bits");
        L->kind = strcmp(kind, "dense") == 0 ? HYB_DENSE : HYB_OUT;
        L->in_c = (size_t)ib, L->in_h = L->in_w = 1, L->in_cw = (size_t)iwd;
        L->kh = L->kw = L->stride = 1;
        L->out_h = L->out_w = 1;
        L->n_out = (size_t)on, L->out_cw = hyb_words(L->n_out);
        L->kbits = L->in_c, L->kwords = L->in_cw;
        L->in_size = L->kwords, L->out_size = L->out_cw;
    } else {
        PyErr_Format(PyExc_ValueError, "unknown layer kind %s", kind);
        return -1;
    }
    size_t nw;
    L->groups = (L->n_out + HYB_GROUP - 1) / HYB_GROUP;
    if (!hyb_count(L->n_out, L->kwords, 1, &nw)) return geometry_error("layer has too many weights");
    size_t prev_values;
    if (L->kind == HYB_CONV ? prev_c != L->in_c || prev_h != L->in_h || prev_w != L->in_w
                            : prev_size != L->in_size || !hyb_count(prev_c, prev_h, prev_w, &prev_values) ||
                                  prev_values != L->in_c) {
        PyErr_SetString(PyExc_ValueError, "layer input does not match the previous layer");
        return -1;
    }
    if (!(rows = (uint64_t *)copy_array(wo, U64, nw, "weights"))) return -1;
    if (L->kind == HYB_OUT) {
        L->flip = (int8_t *)calloc(L->n_out, 1);
        if (!L->flip) goto nomem;
        memset(L->flip, 1, L->n_out);
        if (!(L->alpha = (float *)copy_array(ao, F32, L->n_out, "alpha")) ||
            !(L->bn_a = (float *)copy_array(bao, F32, L->n_out, "bn_a")) ||
            !(L->bn_b = (float *)copy_array(bbo, F32, L->n_out, "bn_b")))
            goto fail;
        for (size_t c = 0; c < L->n_out; c++)
            if (!isfinite(L->alpha[c]) || !isfinite(L->bn_a[c]) || !isfinite(L->bn_b[c])) {
                PyErr_SetString(PyExc_ValueError, "output layer alpha, bn_a and bn_b must be finite");
                goto fail;
            }
    } else {
        if (!(L->flip = (int8_t *)copy_array(fo, I8, L->n_out, "flips"))) goto fail;
        for (size_t c = 0; c < L->n_out; c++)
            if (L->flip[c] != 1 && L->flip[c] != -1) {
                PyErr_SetString(PyExc_ValueError, "flips must be +1 or -1");
                goto fail;
            }
        if (to != Py_None) {
            int32_t *thr = (int32_t *)copy_array(to, I32, L->n_out, "thresholds");
            if (!thr) goto fail;
            L->thr = (int32_t *)malloc(L->groups * HYB_GROUP * sizeof(int32_t));
            if (!L->thr) {
                free(thr);
                goto nomem;
            }
            for (size_t c = 0; c < L->groups * HYB_GROUP; c++) L->thr[c] = c < L->n_out ? thr[c] : INT32_MAX;
            free(thr);
            for (size_t c = 0; c < L->n_out; c++)
                if (L->thr[c] < -1 || L->thr[c] > (int32_t)L->kbits) {
                    PyErr_SetString(PyExc_ValueError, "threshold out of range");
                    goto fail;
                }
        }
    }
    /* Pad bits must be 0 in every weight word: the bits past the previous layer's channels in
     * each pixel's words (a row is one pixel), or they would count as mismatches. The input
     * checks above make every weight row a whole number of pixels of words(prev_c) words. */
    {
        const size_t per = hyb_words(prev_c), rem = prev_c % 64;
        if (rem)
            for (size_t i = per - 1; i < nw; i += per)
                if (rows[i] >> rem) {
                    PyErr_SetString(PyExc_ValueError, "weight padding bits must be 0");
                    goto fail;
                }
    }
    if (hyb_layer_prepare(L, rows) < 0) goto nomem;
    free(rows);
    return 0;
nomem:
    PyErr_NoMemory();
fail:
    free(rows);
    return -1;
}

static int Network_init(NetworkObject *self, PyObject *args, PyObject *kwds) {
    PyObject *input, *layers;
    static char *kwlist[] = {"input", "layers", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO", kwlist, &input, &layers)) return -1;
    hyb_net *net = &self->net;
    if (net->nlayers) { /* another thread may be running it with the GIL released */
        PyErr_SetString(PyExc_ValueError, "a Network cannot be initialised twice");
        return -1;
    }
    const char *kind;
    Py_ssize_t c = 0, h = 1, w = 1;
    float shift = 0.0f;
    if (!PyTuple_Check(input) || !PyArg_ParseTuple(input, "s|nnnf", &kind, &c, &h, &w, &shift)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "input spec must be a tuple");
        return -1;
    }
    net->image = strcmp(kind, "image") == 0;
    if ((!net->image && strcmp(kind, "rows") != 0) || (!net->image && (h != 1 || w != 1))) {
        PyErr_SetString(PyExc_ValueError,
                        "input spec must be ('rows', bits) or ('image', c, h, w[, shift])");
        return -1;
    }
    if (!isfinite(shift) || (!net->image && shift != 0.0f)) {
        PyErr_SetString(PyExc_ValueError, "input shift must be finite (and 0 for rows)");
        return -1;
    }
    net->in_shift = shift;
    if (!DIM_OK(h) || !DIM_OK(w) || !(net->image ? DIM_OK(c) : COUNT_OK(c)))
        return geometry_error("input dimension out of range");
    net->in_c = (size_t)c, net->in_h = (size_t)h, net->in_w = (size_t)w;
    size_t values;
    if (!hyb_count(net->in_h, net->in_w, net->in_c, &values) ||
        !hyb_count(net->in_h, net->in_w, hyb_words(net->in_c), &net->in_size))
        return geometry_error("input too large");
    PyObject *seq = PySequence_Fast(layers, "layers must be a sequence");
    if (!seq) return -1;
    const Py_ssize_t nl = PySequence_Fast_GET_SIZE(seq);
    if (nl < 1) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "a network needs at least one layer");
        return -1;
    }
    net->layers = (hyb_layer *)calloc((size_t)nl, sizeof(hyb_layer));
    if (!net->layers) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    size_t pc = net->in_c, ph = net->in_h, pw = net->in_w, ps = net->in_size;
    for (Py_ssize_t i = 0; i < nl; i++) {
        hyb_layer *L = &net->layers[i];
        if (parse_layer(PySequence_Fast_GET_ITEM(seq, i), L, pc, ph, pw, ps) < 0) {
            net->nlayers = (size_t)i + 1;
            Py_DECREF(seq);
            hyb_net_free(net);
            return -1;
        }
        net->nlayers = (size_t)i + 1;
        const int last = i + 1 == nl;
        if ((L->kind == HYB_OUT && !last) || (L->kind != HYB_OUT && !last && !L->thr)) {
            Py_DECREF(seq);
            hyb_net_free(net);
            PyErr_SetString(PyExc_ValueError, "only the last layer may lack thresholds");
            return -1;
        }
        pc = L->n_out, ph = L->out_h, pw = L->out_w, ps = L->out_size;
    }
    Py_DECREF(seq);
    if (hyb_net_prepare_patch(net) < 0) {
        hyb_net_free(net);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int check_status(int status) {
    switch (status) {
    case HYB_OK: return 0;
    case HYB_ERR_NOMEM: PyErr_NoMemory(); return -1;
    case HYB_ERR_SIZE: PyErr_SetString(PyExc_ValueError, "batch too large for this network"); return -1;
    default: return status; /* NaN / pad bits: reported to Python as an int */
    }
}

/* per-sample item counts of an input kind */
static int input_items(const hyb_net *net, int x_kind, size_t *per, dkind *k) {
    switch (x_kind) {
    case HYB_IN_FLOAT: *per = net->in_c * net->in_h * net->in_w, *k = F32; return 0; /* <= 2^26 */
    case HYB_IN_PACKBITS:
        if (net->image) break;
        *per = (net->in_c + 7) / 8, *k = U8;
        return 0;
    case HYB_IN_WORDS: *per = net->in_size, *k = U64; return 0;
    }
    PyErr_SetString(PyExc_ValueError, "unsupported input kind for this network");
    return -1;
}

static PyObject *Network_run(NetworkObject *self, PyObject *args) {
    PyObject *xo, *oo;
    int x_kind, out_kind, threads;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OinOii", &xo, &x_kind, &n, &oo, &out_kind, &threads)) return NULL;
    const hyb_net *net = &self->net;
    if (!net->nlayers) return PyErr_Format(PyExc_ValueError, "network is not initialised");
    const hyb_layer *L = &net->layers[net->nlayers - 1];
    size_t per, nin, nout, oper = 0;
    dkind xk, ok = F32;
    if (input_items(net, x_kind, &per, &xk) < 0) return NULL;
    switch (out_kind) {
    case HYB_OUT_LOGITS: oper = L->n_out, ok = F32; break;
    case HYB_OUT_ARGMAX: oper = 1, ok = I64; break;
    case HYB_OUT_WORDS: oper = L->out_size, ok = U64; break;
    case HYB_OUT_ACC: oper = L->out_h * L->out_w * L->n_out, ok = I32; break; /* <= 2^26 */
    default: return PyErr_Format(PyExc_ValueError, "unknown output kind");
    }
    if ((out_kind == HYB_OUT_LOGITS || out_kind == HYB_OUT_ARGMAX) && L->kind != HYB_OUT)
        return PyErr_Format(PyExc_ValueError, "network has no float output layer");
    if (out_kind == HYB_OUT_WORDS && !L->thr)
        return PyErr_Format(PyExc_ValueError, "last layer has no thresholds");
    if (n < 0 || !mul_ok((size_t)n, per, &nin) || !mul_ok((size_t)n, oper, &nout))
        return PyErr_Format(PyExc_ValueError, "bad batch size");
    Py_buffer x, o;
    if (get_buf(xo, &x, xk, (Py_ssize_t)nin, 0, "x") < 0) return NULL;
    if (get_buf(oo, &o, ok, (Py_ssize_t)nout, 1, "out") < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS status = hyb_net_run(net, x.buf, x_kind, (size_t)n, o.buf, out_kind, threads);
    Py_END_ALLOW_THREADS PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    status = check_status(status);
    if (status < 0) return NULL;
    return PyLong_FromLong(status);
}

static PyObject *Network_trace(NetworkObject *self, PyObject *args) {
    PyObject *xo, *outs;
    int x_kind, threads;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OinOi", &xo, &x_kind, &n, &outs, &threads)) return NULL;
    const hyb_net *net = &self->net;
    if (!net->nlayers) return PyErr_Format(PyExc_ValueError, "network is not initialised");
    size_t per, nin;
    dkind xk;
    if (input_items(net, x_kind, &per, &xk) < 0) return NULL;
    if (!PyList_Check(outs) || (size_t)PyList_GET_SIZE(outs) != net->nlayers)
        return PyErr_Format(PyExc_ValueError, "outs must be a list of %zu arrays", net->nlayers);
    if (n < 0 || !mul_ok((size_t)n, per, &nin)) return PyErr_Format(PyExc_ValueError, "bad batch size");
    Py_buffer x;
    Py_buffer *views = (Py_buffer *)calloc(net->nlayers, sizeof(Py_buffer));
    int32_t **ptrs = (int32_t **)calloc(net->nlayers, sizeof(int32_t *));
    size_t got = 0;
    PyObject *result = NULL;
    if (!views || !ptrs) {
        PyErr_NoMemory();
        goto done;
    }
    if (get_buf(xo, &x, xk, (Py_ssize_t)nin, 0, "x") < 0) goto done;
    for (; got < net->nlayers; got++) {
        const hyb_layer *L = &net->layers[got];
        size_t cnt;
        if (!mul_ok((size_t)n, L->out_h * L->out_w * L->n_out, &cnt) || /* product <= 2^26 */
            get_buf(PyList_GET_ITEM(outs, got), &views[got], I32, (Py_ssize_t)cnt, 1, "trace output") < 0)
            break;
        ptrs[got] = (int32_t *)views[got].buf;
    }
    if (got == net->nlayers) {
        int status;
        Py_BEGIN_ALLOW_THREADS status = hyb_net_trace(net, x.buf, x_kind, (size_t)n, ptrs, threads);
        Py_END_ALLOW_THREADS status = check_status(status);
        if (status >= 0) result = PyLong_FromLong(status);
    }
    PyBuffer_Release(&x);
    for (size_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
done:
    free(views);
    free(ptrs);
    return result;
}

static PyMethodDef Network_methods[] = {
    {"run", (PyCFunction)Network_run, METH_VARARGS,
     "run(x, x_kind, n, out, out_kind, threads) -> status (0 ok, 1 NaN input, 2 pad bits set)"},
    {"trace", (PyCFunction)Network_trace, METH_VARARGS,
     "trace(x, x_kind, n, outs, threads) -> status; fills each layer's int32 accumulators"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject NetworkType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hybnn.engine._kernels.Network",
    .tp_basicsize = sizeof(NetworkObject),
    .tp_dealloc = (destructor)Network_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Network(input, layers): a packed binary network held in C memory.",
    .tp_methods = Network_methods,
    .tp_init = (initproc)Network_init,
    .tp_new = PyType_GenericNew,
};

/* ---- fused float epilogue ------------------------------------------------------------------ */

#define EW_BUFS (5 + 3 * HYB_EW_MAX_STEPS)

/* Get an optional buffer (None: *ptr = NULL) into bufs[*nb]. */
static int ew_buf(PyObject *obj, Py_buffer *bufs, int *nb, dkind k, size_t count, int writable,
                  const char *what, void **ptr) {
    *ptr = NULL;
    if (obj == Py_None) return 0;
    if (get_buf(obj, &bufs[*nb], k, (Py_ssize_t)count, writable, what) < 0) return -1;
    *ptr = bufs[(*nb)++].buf;
    return 0;
}

/* epilogue(source, alpha, n, c, hw, steps, out, shift, bits, threads) -> NaN seen; see
 * hyb_epilogue (engine.h). alpha None: source is float (n, c, hw), else int32 (n, hw, c).
 * steps: ((op, a, b, other), ...) with None for what an op does not use. */
static PyObject *py_epilogue(PyObject *self, PyObject *args) {
    PyObject *src, *alpha, *steps, *out, *shift, *bits;
    Py_ssize_t n, c, hw;
    int threads;
    if (!PyArg_ParseTuple(args, "OOnnnOOOOi", &src, &alpha, &n, &c, &hw, &steps, &out, &shift, &bits,
                          &threads))
        return NULL;
    size_t a, count, words;
    if (n < 0 || !DIM_OK(c) || !DIM_OK(hw) || !mul_ok((size_t)n, (size_t)c, &a) ||
        !mul_ok(a, (size_t)hw, &count) || !mul_ok((size_t)n * (size_t)hw, hyb_words((size_t)c), &words))
        return PyErr_Format(PyExc_ValueError, "bad epilogue shape");
    if (!PyTuple_Check(steps) || PyTuple_GET_SIZE(steps) > HYB_EW_MAX_STEPS)
        return PyErr_Format(PyExc_ValueError, "steps must be a tuple of at most %d steps", HYB_EW_MAX_STEPS);
    if (out == Py_None && bits == Py_None) return PyErr_Format(PyExc_ValueError, "nothing to write");
    hyb_ew e;
    memset(&e, 0, sizeof e);
    e.n = (size_t)n;
    e.c = (size_t)c;
    e.hw = (size_t)hw;
    Py_buffer bufs[EW_BUFS];
    int nb = 0, rc = -1;
    void *p;
    if (alpha != Py_None) {
        if (ew_buf(src, bufs, &nb, I32, count, 0, "source", &p) < 0) goto done;
        e.acc = (const int32_t *)p;
        if (ew_buf(alpha, bufs, &nb, F32, (size_t)c, 0, "alpha", &p) < 0) goto done;
        e.alpha = (const float *)p;
    } else {
        if (src == Py_None) {
            PyErr_SetString(PyExc_ValueError, "source is missing");
            goto done;
        }
        if (ew_buf(src, bufs, &nb, F32, count, 0, "source", &p) < 0) goto done;
        e.x = (const float *)p;
    }
    for (Py_ssize_t s = 0; s < PyTuple_GET_SIZE(steps); s++) {
        PyObject *st = PyTuple_GET_ITEM(steps, s), *ao, *bo, *oo;
        int op;
        if (!PyArg_ParseTuple(st, "iOOO", &op, &ao, &bo, &oo)) goto done;
        if (op < HYB_EW_AFFINE || op > HYB_EW_PRELU) {
            PyErr_Format(PyExc_ValueError, "unknown step %d", op);
            goto done;
        }
        const int need_a = op != HYB_EW_ADD, need_b = op == HYB_EW_AFFINE || op == HYB_EW_ADD_AFFINE,
                  need_o = op == HYB_EW_ADD || op == HYB_EW_ADD_AFFINE;
        if (need_a != (ao != Py_None) || need_b != (bo != Py_None) || need_o != (oo != Py_None)) {
            PyErr_Format(PyExc_ValueError, "step %zd has the wrong arrays for op %d", s, op);
            goto done;
        }
        hyb_ew_step *es = &e.steps[e.nsteps++];
        es->op = op;
        if (ew_buf(ao, bufs, &nb, F32, (size_t)c, 0, "step a", &p) < 0) goto done;
        es->a = (const float *)p;
        if (ew_buf(bo, bufs, &nb, F32, (size_t)c, 0, "step b", &p) < 0) goto done;
        es->b = (const float *)p;
        if (ew_buf(oo, bufs, &nb, F32, count, 0, "step other", &p) < 0) goto done;
        es->other = (const float *)p;
    }
    if (ew_buf(out, bufs, &nb, F32, count, 1, "out", &p) < 0) goto done;
    e.out = (float *)p;
    if (ew_buf(shift, bufs, &nb, F32, (size_t)c, 0, "shift", &p) < 0) goto done;
    e.shift = (const float *)p;
    if (ew_buf(bits, bufs, &nb, U64, words, 1, "bits", &p) < 0) goto done;
    e.bits = (uint64_t *)p;
    if (e.n) {
        Py_BEGIN_ALLOW_THREADS rc = hyb_epilogue(&e, threads);
        Py_END_ALLOW_THREADS
    } else
        rc = 0;
    if (rc < 0) PyErr_NoMemory();
done:
    for (int b = 0; b < nb; b++) PyBuffer_Release(&bufs[b]);
    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

/* conv2d(x, weight, bias, out, n, c, h, w, o, k, stride, pad, threads[, scale, shift]): see
 * hyb_conv2d_f32 */
static PyObject *py_conv2d(PyObject *self, PyObject *args) {
    PyObject *xo, *wo_, *bo, *oo, *so = Py_None, *to = Py_None;
    Py_ssize_t n, c, h, w, o, k, s, p;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOnnnnnnnni|OO", &xo, &wo_, &bo, &oo, &n, &c, &h, &w, &o, &k, &s, &p, &threads,
                          &so, &to))
        return NULL;
    if ((so == Py_None) != (to == Py_None)) return PyErr_Format(PyExc_ValueError, "scale and shift go together");
    if (n < 0 || !DIM_OK(c) || !DIM_OK(h) || !DIM_OK(w) || !DIM_OK(o) || !DIM_OK(k) || !DIM_OK(s) || p < 0 ||
        p >= k || (size_t)k > (size_t)h + 2 * (size_t)p || (size_t)k > (size_t)w + 2 * (size_t)p)
        return PyErr_Format(PyExc_ValueError, "bad convolution geometry");
    hyb_conv cv = {.n = (size_t)n, .c = (size_t)c, .h = (size_t)h, .w = (size_t)w, .o = (size_t)o,
                   .k = (size_t)k, .s = (size_t)s, .p = (size_t)p};
    cv.ho = (cv.h + 2 * cv.p - cv.k) / cv.s + 1;
    cv.wo = (cv.w + 2 * cv.p - cv.k) / cv.s + 1;
    size_t per_in, per_out, nw, nin, nout, pad_in;
    if (!hyb_count(cv.c, cv.h, cv.w, &per_in) || !hyb_count(cv.o, cv.ho, cv.wo, &per_out) ||
        !hyb_count(cv.o, cv.c, cv.k * cv.k, &nw) || !hyb_count(cv.c, cv.h + 2 * cv.p + cv.s, cv.w + 2 * cv.p + 64, &pad_in) ||
        !mul_ok(cv.n, per_in, &nin) || !mul_ok(cv.n, per_out, &nout))
        return PyErr_Format(PyExc_ValueError, "convolution too large");
    Py_buffer bufs[6];
    int nb = 0, rc = -1;
    void *ptr;
    if (ew_buf(so, bufs, &nb, F32, cv.o, 0, "scale", &ptr) < 0) goto done;
    cv.scale = (const float *)ptr;
    if (ew_buf(to, bufs, &nb, F32, cv.o, 0, "shift", &ptr) < 0) goto done;
    cv.shift = (const float *)ptr;
    if (ew_buf(xo, bufs, &nb, F32, nin, 0, "x", &ptr) < 0) goto done;
    cv.x = (const float *)ptr;
    if (ew_buf(wo_, bufs, &nb, F32, nw, 0, "weight", &ptr) < 0) goto done;
    cv.wt = (const float *)ptr;
    if (ew_buf(bo, bufs, &nb, F32, cv.o, 0, "bias", &ptr) < 0) goto done;
    cv.bias = (const float *)ptr;
    if (ew_buf(oo, bufs, &nb, F32, nout, 1, "out", &ptr) < 0) goto done;
    cv.out = (float *)ptr;
    if (!cv.x || !cv.wt || !cv.out) {
        PyErr_SetString(PyExc_ValueError, "x, weight and out are required");
        goto done;
    }
    if (cv.n) {
        Py_BEGIN_ALLOW_THREADS rc = hyb_conv2d_f32(&cv, threads);
        Py_END_ALLOW_THREADS
    } else
        rc = 0;
    if (rc < 0) PyErr_NoMemory();
done:
    for (int b = 0; b < nb; b++) PyBuffer_Release(&bufs[b]);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

/* pool2d(x, out, planes, h, w, ho, wo, k, stride, pad, avg, include_pad, threads): see
 * hyb_pool2d_f32; every window must start inside the input or its top/left padding. */
static PyObject *py_pool2d(PyObject *self, PyObject *args) {
    PyObject *xo, *oo;
    Py_ssize_t planes, h, w, ho, wo, k, s, p;
    int avg, incl, threads;
    if (!PyArg_ParseTuple(args, "OOnnnnnnnniii", &xo, &oo, &planes, &h, &w, &ho, &wo, &k, &s, &p, &avg, &incl,
                          &threads))
        return NULL;
    if (planes < 0 || !DIM_OK(h) || !DIM_OK(w) || !DIM_OK(ho) || !DIM_OK(wo) || !DIM_OK(k) || !DIM_OK(s) ||
        p < 0 || p > k / 2 || (size_t)(ho - 1) * (size_t)s >= (size_t)h + (size_t)p ||
        (size_t)(wo - 1) * (size_t)s >= (size_t)w + (size_t)p)
        return PyErr_Format(PyExc_ValueError, "bad pooling geometry");
    size_t a, nin, nout;
    if (!mul_ok((size_t)planes, (size_t)h, &a) || !mul_ok(a, (size_t)w, &nin) ||
        !mul_ok((size_t)planes, (size_t)ho, &a) || !mul_ok(a, (size_t)wo, &nout))
        return PyErr_Format(PyExc_ValueError, "bad shape");
    hyb_pool pl = {.planes = (size_t)planes, .h = (size_t)h, .w = (size_t)w, .ho = (size_t)ho, .wo = (size_t)wo,
                   .k = (size_t)k, .s = (size_t)s, .p = (size_t)p, .avg = avg != 0, .include_pad = incl != 0};
    Py_buffer x, o;
    if (get_buf(xo, &x, F32, (Py_ssize_t)nin, 0, "x") < 0) return NULL;
    if (get_buf(oo, &o, F32, (Py_ssize_t)nout, 1, "out") < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    pl.x = (const float *)x.buf;
    pl.out = (float *)o.buf;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = hyb_pool2d_f32(&pl, threads);
    Py_END_ALLOW_THREADS PyBuffer_Release(&x);
    PyBuffer_Release(&o);
    if (rc < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"isa", py_isa, METH_NOARGS, "Name of the ISA the kernels use now."},
    {"detect_isa", py_detect_isa, METH_NOARGS, "Best ISA this CPU supports."},
    {"supported_isas", py_supported_isas, METH_NOARGS, "ISAs this CPU supports."},
    {"set_isa", py_set_isa, METH_O, "Force the kernels of an ISA (scalar, avx2, avx512, neon)."},
    {"pack_rows", py_pack_rows, METH_VARARGS, "pack_rows(x, out, rows, k) -> NaN seen"},
    {"pack_nchw", py_pack_nchw, METH_VARARGS, "pack_nchw(x, out, n, c, hw) -> NaN seen"},
    {"pack_bytes", py_pack_bytes, METH_VARARGS, "pack_bytes(codes, out, rows, nbits)"},
    {"maxpool", py_maxpool, METH_VARARGS, "maxpool(x, out, n, h, w, cw, k, stride)"},
    {"epilogue", py_epilogue, METH_VARARGS,
     "epilogue(source, alpha, n, c, hw, steps, out, shift, bits, threads) -> NaN seen"},
    {"pool2d", py_pool2d, METH_VARARGS,
     "pool2d(x, out, planes, h, w, ho, wo, k, stride, pad, avg, include_pad, threads)"},
    {"conv2d", py_conv2d, METH_VARARGS,
     "conv2d(x, weight, bias, out, n, c, h, w, o, k, stride, pad, threads): float32 NCHW"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_kernels", "Compiled XNOR/popcount kernels of hybnn.engine.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__kernels(void) {
    if (PyType_Ready(&NetworkType) < 0) return NULL;
    hyb_get_isa(); /* detect the CPU once, under the GIL, before any thread runs a kernel */
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "MAX_DIM", (long)HYB_MAX_DIM) < 0 ||
        PyModule_AddIntConstant(m, "MAX_ELEMENTS", (long)HYB_MAX_ELEMENTS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&NetworkType);
    if (PyModule_AddObject(m, "Network", (PyObject *)&NetworkType) < 0) {
        Py_DECREF(&NetworkType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
