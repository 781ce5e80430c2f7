/* int8 linear layers on a CPU with AVX-512 VNNI: a decode step's few rows and a prefill's hundreds.
 *
 * A decode step multiplies one row per stream by every weight matrix, so at batch 1 it is bound by
 * reading the weights.  fbgemm's dynamic int8 product (what torch runs) read GPT-SoVITS's 96 step
 * linears (75 MB) in 2.3 ms on 2 cores, 33 GB/s; this kernel reads them in 1.3 to 1.5 ms.  The
 * weights are packed as [out / 16][in / 4][16][4] int8, so one 64-byte load is 4 inputs of 16
 * outputs, and each row adds its 4 inputs (u8, broadcast from its own row of the quantised input)
 * into its own 16 sums with one VNNI instruction (u8 x s8, 4 products summed into each int32
 * lane).  Tiles of 4 rows by 64 outputs keep 16 sums in registers.  At 16 rows the step's linears
 * take 2.4 ms; a 210-row prefill's run at 700-930 GMAC/s by layer shape (fbgemm: 550-650), where
 * the input rows are quantised on every thread.  Inputs are a multiple of 16, outputs of 64.
 *
 * Arithmetic: weights symmetric int8 per output (scale w_n, as torch's per-channel quantisation
 * makes them); each input row asymmetric u8 (scale x_m, zero point z_m over its own min and max,
 * where fbgemm takes one for the whole call).  y[m][n] = x_m * w_n * (sum_k u[m][k] W[n][k] -
 * z_m * colsum[n]) + bias[n], then ReLU if asked; the integer sum is exact.
 *
 * Thread-safety: reads the packed weights and its input, writes only its output; calls may run at
 * once.  The GIL is released; the OpenMP team (the calling thread's torch thread count) is spread
 * over groups of 64 outputs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_X86 1
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))
#else
#define HAVE_X86 0
#endif


/* Row x (k values) as u8 with scale and zero point: the row's min and max (0 always inside, so
 * zeros stay exact) spread over 0 .. 255; rounded to nearest even.  A constant-zero row is all
 * zero point with scale 1; a NaN or infinity gives a zero row (nothing finite stands for it). */
static void quantize_input(const float *x, int64_t k, uint8_t *out, float *scale, int32_t *zero) {
    float low = 0.0f, high = 0.0f;
    int finite = 1;
    for (int64_t i = 0; i < k; i++) {
        finite &= fabsf(x[i]) <= 3.40282347e38f;
        low = x[i] < low ? x[i] : low;
        high = x[i] > high ? x[i] : high;
    }
    if (!finite || high == low) {
        memset(out, 0, (size_t)k);
        *scale = 1.0f;
        *zero = 0;
        return;
    }
    const float step = (high - low) / 255.0f;
    const float z = nearbyintf(-low / step);
    const int32_t zp = (int32_t)(z < 0.0f ? 0.0f : z > 255.0f ? 255.0f : z);
    const float inverse = 1.0f / step;
    for (int64_t i = 0; i < k; i++) {
        float q = nearbyintf(x[i] * inverse) + (float)zp;
        out[i] = (uint8_t)(q < 0.0f ? 0.0f : q > 255.0f ? 255.0f : q);
    }
    *scale = step;
    *zero = zp;
}

#if HAVE_X86
/* quantize_input for k a multiple of 16, with the same arithmetic (so the same bytes). */
VNNI static void quantize_input_avx512(const float *x, int64_t k, uint8_t *out, float *scale, int32_t *zero) {
    const __m512 largest = _mm512_set1_ps(3.40282347e38f);
    __m512 low16 = _mm512_setzero_ps(), high16 = _mm512_setzero_ps();
    __mmask16 finite = 0xffff;
    for (int64_t i = 0; i < k; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        finite &= _mm512_cmp_ps_mask(_mm512_abs_ps(v), largest, _CMP_LE_OQ);
        low16 = _mm512_min_ps(low16, v);
        high16 = _mm512_max_ps(high16, v);
    }
    const float low = _mm512_reduce_min_ps(low16), high = _mm512_reduce_max_ps(high16);
    if (finite != 0xffff || high == low) {
        memset(out, 0, (size_t)k);
        *scale = 1.0f;
        *zero = 0;
        return;
    }
    const float step = (high - low) / 255.0f;
    const float z = nearbyintf(-low / step);
    const int32_t zp = (int32_t)(z < 0.0f ? 0.0f : z > 255.0f ? 255.0f : z);
    const __m512 inverse = _mm512_set1_ps(1.0f / step), shift = _mm512_set1_ps((float)zp);
    for (int64_t i = 0; i < k; i += 16) {
        __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), inverse),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, shift), _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
        _mm_storeu_si128((__m128i *)(out + i), _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(q)));
    }
    *scale = step;
    *zero = zp;
}
#endif

typedef struct {
    const int8_t *packed;    /* [out / 16][in / 4][16][4] */
    const float *w_scale;    /* [out] */
    const int32_t *colsum;   /* [out]: sum over in of W[n][k] */
    const float *bias;       /* [out] or NULL */
    const uint8_t *u;        /* [word_rows][in] quantised inputs (padding rows zero) */
    const float *x_scale;    /* [rows] */
    const int32_t *x_zero;   /* [rows] */
    float *out;              /* [rows][out] */
    int64_t rows, in, outs;
    int64_t word_rows;       /* rows the fast path's tiles cover: rows, or rounded up to 4 (zero rows) */
    int relu, fast;
} Product;

static void finish(const Product *p, int64_t m, int64_t n, int32_t sum, float *y) {
    float v = p->x_scale[m] * p->w_scale[n] * (float)(sum - p->x_zero[m] * p->colsum[n]);
    if (p->bias != NULL) v += p->bias[n];
    *y = p->relu && v < 0.0f ? 0.0f : v;
}

/* One block of 16 outputs for every row, portable C. */
static void block_portable(const Product *p, int64_t block) {
    const int8_t *w = p->packed + block * p->in * 16;
    for (int64_t m = 0; m < p->rows; m++) {
        const uint8_t *u = p->u + m * p->in;
        for (int64_t lane = 0; lane < 16; lane++) {
            int32_t sum = 0;
            for (int64_t k = 0; k < p->in; k++) sum += (int32_t)u[k] * w[(k / 4) * 64 + lane * 4 + k % 4];
            finish(p, m, block * 16 + lane, sum, p->out + m * p->outs + block * 16 + lane);
        }
    }
}

#if HAVE_X86
/* Sums of an R x B tile (row-major) to outputs: centred, scaled, bias, ReLU. */
VNNI static inline __attribute__((always_inline)) void finish_tile(const Product *p, const __m512i *sum, int64_t block,
                                                                   int64_t first, const int R, const int B) {
    for (int b = 0; b < B; b++) {
        const int64_t n = 16 * (block + b);
        const __m512 w_scale = _mm512_loadu_ps(p->w_scale + n);
        const __m512i colsum = _mm512_loadu_si512((const void *)(p->colsum + n));
        const __m512 bias = p->bias != NULL ? _mm512_loadu_ps(p->bias + n) : _mm512_setzero_ps();
        for (int r = 0; r < R; r++) {
            const int64_t m = first + r;
            if (m >= p->rows) break; /* a padding row */
            const __m512i centred =
                _mm512_sub_epi32(sum[r * B + b], _mm512_mullo_epi32(_mm512_set1_epi32(p->x_zero[m]), colsum));
            __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(p->x_scale[m]), w_scale), _mm512_cvtepi32_ps(centred));
            v = _mm512_add_ps(v, bias);
            if (p->relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
            _mm512_storeu_ps(p->out + m * p->outs + n, v);
        }
    }
}

/* 4 quantised inputs of a row as one 32-bit word, for a broadcast. */
static inline int32_t word_at(const uint8_t *row, int64_t g) {
    int32_t word;
    memcpy(&word, row + 4 * g, sizeof word);
    return word;
}

/* Rows first .. first + 3 against output blocks block .. block + 3: 16 sums in registers, per 4
 * inputs 4 weight loads and 4 broadcasts for 16 VNNI instructions.  Written out: GCC keeps an
 * array of sums in registers only by copying each one every iteration (the 96 linears of a
 * GPT-SoVITS step at 16 rows, 2 threads: 4.0 ms through a generic R x B tile, 3.1 ms with named
 * sums; 16 x 1 tiles, one weight load for 16 broadcasts, 3.9 ms). */
#define DP(acc, x, w) acc = _mm512_dpbusd_epi32(acc, x, w)
VNNI static inline __attribute__((always_inline)) void tile_4x4(const Product *p, int64_t block, int64_t first,
                                                                int ahead_from, const int ahead) {
    __m512i s00 = _mm512_setzero_si512(), s01 = s00, s02 = s00, s03 = s00, s10 = s00, s11 = s00, s12 = s00,
            s13 = s00, s20 = s00, s21 = s00, s22 = s00, s23 = s00, s30 = s00, s31 = s00, s32 = s00, s33 = s00;
    const int64_t groups = p->in / 4, stride = p->in * 16;
    const int8_t *w = p->packed + block * stride;
    const uint8_t *x0 = p->u + first * p->in, *x1 = x0 + p->in, *x2 = x1 + p->in, *x3 = x2 + p->in;
    for (int64_t g = 0; g < groups; g++, w += 64) {
        for (int b = 0; b < ahead; b++) _mm_prefetch((const char *)(w + (ahead_from + b) * stride), _MM_HINT_T0);
        const __m512i w0 = _mm512_loadu_si512((const void *)w), w1 = _mm512_loadu_si512((const void *)(w + stride));
        const __m512i w2 = _mm512_loadu_si512((const void *)(w + 2 * stride));
        const __m512i w3 = _mm512_loadu_si512((const void *)(w + 3 * stride));
        __m512i in = _mm512_set1_epi32(word_at(x0, g));
        DP(s00, in, w0); DP(s01, in, w1); DP(s02, in, w2); DP(s03, in, w3);
        in = _mm512_set1_epi32(word_at(x1, g));
        DP(s10, in, w0); DP(s11, in, w1); DP(s12, in, w2); DP(s13, in, w3);
        in = _mm512_set1_epi32(word_at(x2, g));
        DP(s20, in, w0); DP(s21, in, w1); DP(s22, in, w2); DP(s23, in, w3);
        in = _mm512_set1_epi32(word_at(x3, g));
        DP(s30, in, w0); DP(s31, in, w1); DP(s32, in, w2); DP(s33, in, w3);
    }
    const __m512i sums[16] = {s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33};
    finish_tile(p, sums, block, first, 4, 4);
}

/* One row against 4 blocks, written out for the reason above (through a generic tile GCC copied the
 * 4 sums every iteration: the 96 linears of a v2 step at one row, 1.73 ms against 1.58). */
VNNI static void tile_1x4(const Product *p, int64_t block, int64_t first) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    const int64_t groups = p->in / 4, stride = p->in * 16;
    const int8_t *w = p->packed + block * stride;
    const uint8_t *x = p->u + first * p->in;
    for (int64_t g = 0; g < groups; g++, w += 64) {
        const __m512i in = _mm512_set1_epi32(word_at(x, g));
        DP(s0, in, _mm512_loadu_si512((const void *)w));
        DP(s1, in, _mm512_loadu_si512((const void *)(w + stride)));
        DP(s2, in, _mm512_loadu_si512((const void *)(w + 2 * stride)));
        DP(s3, in, _mm512_loadu_si512((const void *)(w + 3 * stride)));
    }
    const __m512i sums[4] = {s0, s1, s2, s3};
    finish_tile(p, sums, block, first, 1, 4);
}

/* tile_4x4 asking for 0, 1, 2 or 4 blocks ahead (a constant, so the prefetches unroll: a loop
 * over a variable count cost 4 rows 2.2 ms against 1.9) */
VNNI static void tile_4x4_ahead0(const Product *p, int64_t block, int64_t first, int from) {
    tile_4x4(p, block, first, from, 0);
}
VNNI static void tile_4x4_ahead1(const Product *p, int64_t block, int64_t first, int from) {
    tile_4x4(p, block, first, from, 1);
}
VNNI static void tile_4x4_ahead2(const Product *p, int64_t block, int64_t first, int from) {
    tile_4x4(p, block, first, from, 2);
}
VNNI static void tile_4x4_ahead4(const Product *p, int64_t block, int64_t first, int from) {
    tile_4x4(p, block, first, from, 4);
}

/* Output blocks block .. block + 3 for every row: 4 rows at a time (2 or 3 rows left are padded
 * to 4 with zero rows: 1.6 ms for 4 rows, 1.9 for 2 or 3 through smaller tiles), or a row alone.
 * The first (up to) 4 row tiles share out the next quad's 4 blocks to prefetch, so reading the
 * weights overlaps the arithmetic of every row tile, not only the first (the 96 linears of a
 * GPT-SoVITS step at 16 rows, 2 threads: 2.4 ms against 2.9 with the first tile asking for all 4). */
VNNI static void block_quad_vnni(const Product *p, int64_t block) {
    const int64_t tiles = p->word_rows / 4, share = tiles < 4 ? tiles : 4;
    const int next = block + 8 <= p->outs / 16; /* a next quad exists */
    int64_t first = 0;
    for (int64_t t = 0; first + 4 <= p->word_rows; first += 4, t++) {
        const int from = (int)(4 + 4 * t / share), count = t < share && next ? (int)(4 + 4 * (t + 1) / share) - from : 0;
        if (count == 4) tile_4x4_ahead4(p, block, first, from);
        else if (count == 2) tile_4x4_ahead2(p, block, first, from);
        else if (count == 1) tile_4x4_ahead1(p, block, first, from);
        else tile_4x4_ahead0(p, block, first, from);
    }
    if (first < p->word_rows) tile_1x4(p, block, first); /* one row alone */
}

static int cpu_has_vnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
}
#else
static int cpu_has_vnni(void) { return 0; }
#endif

/* Input row m of x into u, x_scale and x_zero (the fast path's quantiser where the CPU runs it). */
static void quantize_row(const Product *p, const float *x, uint8_t *u, float *x_scale, int32_t *x_zero, int64_t m) {
#if HAVE_X86
    if (p->fast) {
        quantize_input_avx512(x + m * p->in, p->in, u + m * p->in, x_scale + m, x_zero + m);
        return;
    }
#endif
    quantize_input(x + m * p->in, p->in, u + m * p->in, x_scale + m, x_zero + m);
}

static void run_product(const Product *p, int threads) {
#if HAVE_X86
    if (p->fast) {
        const int64_t quads = p->outs / 64;
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
        for (int64_t quad = 0; quad < quads; quad++) block_quad_vnni(p, 4 * quad);
        return;
    }
#endif
    const int64_t blocks = p->outs / 16;
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
    for (int64_t block = 0; block < blocks; block++) block_portable(p, block);
}

/* ---- Python binding ------------------------------------------------------------------------------ */

static int read_ints(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t expected, const char *name, int64_t *v) {
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", name, expected);
        return -1;
    }
    for (Py_ssize_t i = 0; i < expected; i++) {
        v[i] = PyLong_AsLongLong(args[i]);
        if (v[i] == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

/* linear(x, rows, in, outs, packed, w_scale, colsum, bias, out, relu, portable, threads): raw
 * addresses (bias 0 for none) and sizes. */
static PyObject *py_linear(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    int64_t v[12];
    if (read_ints(args, nargs, 12, "linear", v) != 0) return NULL;
    Product p;
    const float *x = (const float *)(uintptr_t)v[0];
    p.rows = v[1];
    p.in = v[2];
    p.outs = v[3];
    p.packed = (const int8_t *)(uintptr_t)v[4];
    p.w_scale = (const float *)(uintptr_t)v[5];
    p.colsum = (const int32_t *)(uintptr_t)v[6];
    p.bias = (const float *)(uintptr_t)v[7];
    p.out = (float *)(uintptr_t)v[8];
    p.relu = v[9] != 0;
    const int portable = v[10] != 0, threads = (int)v[11];
    if (p.rows < 0 || p.in < 16 || p.in % 16 || p.outs < 64 || p.outs % 64 || threads < 1) {
        PyErr_SetString(PyExc_ValueError, "linear: bad sizes or thread count");
        return NULL;
    }
    p.fast = !portable && cpu_has_vnni();
    p.word_rows = p.rows <= 1 ? p.rows : (p.rows + 3) & ~(int64_t)3;
    uint8_t *u = malloc((size_t)(p.word_rows * p.in) + 1);
    float *x_scale = malloc(sizeof(float) * (size_t)p.rows + 1);
    int32_t *x_zero = malloc(sizeof(int32_t) * (size_t)p.rows + 1);
    if (u == NULL || x_scale == NULL || x_zero == NULL) {
        free(u);
        free(x_scale);
        free(x_zero);
        return PyErr_NoMemory();
    }
    p.u = u;
    p.x_scale = x_scale;
    p.x_zero = x_zero;
    Py_BEGIN_ALLOW_THREADS
    memset(u + p.rows * p.in, 0, (size_t)((p.word_rows - p.rows) * p.in));
    /* a prefill's hundreds of rows are quantised on every thread; a step's few on this one (an
       OpenMP region, even one that runs alone, costs more than they take) */
    if (threads > 1 && p.rows >= 32) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t m = 0; m < p.rows; m++) quantize_row(&p, x, u, x_scale, x_zero, m);
    } else {
        for (int64_t m = 0; m < p.rows; m++) quantize_row(&p, x, u, x_scale, x_zero, m);
    }
    run_product(&p, threads);
    Py_END_ALLOW_THREADS
    free(u);
    free(x_scale);
    free(x_zero);
    Py_RETURN_NONE;
}

/* pack(weight, outs, in, packed, w_scale, colsum): weight [outs][in] float32 into the layout above,
 * symmetric int8 per output (scale = largest magnitude / 127, rounded to nearest even). */
static PyObject *py_pack(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    int64_t v[6];
    if (read_ints(args, nargs, 6, "pack", v) != 0) return NULL;
    const float *weight = (const float *)(uintptr_t)v[0];
    const int64_t outs = v[1], in = v[2];
    int8_t *packed = (int8_t *)(uintptr_t)v[3];
    float *w_scale = (float *)(uintptr_t)v[4];
    int32_t *colsum = (int32_t *)(uintptr_t)v[5];
    if (in < 16 || in % 16 || outs < 64 || outs % 64) {
        PyErr_SetString(PyExc_ValueError, "pack: outputs must be a multiple of 64 and inputs of 16");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (int64_t n = 0; n < outs; n++) {
        const float *row = weight + n * in;
        float top = 0.0f;
        for (int64_t k = 0; k < in; k++) top = fabsf(row[k]) > top ? fabsf(row[k]) : top;
        const float inverse = top > 0.0f ? 127.0f / top : 0.0f;
        int32_t sum = 0;
        int8_t *block = packed + (n / 16) * in * 16 + (n % 16) * 4;
        for (int64_t k = 0; k < in; k++) {
            float q = nearbyintf(row[k] * inverse);
            const int8_t w = (int8_t)(q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q);
            block[(k / 4) * 64 + k % 4] = w;
            sum += w;
        }
        w_scale[n] = top / 127.0f;
        colsum[n] = sum;
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_fast_path(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyBool_FromLong(cpu_has_vnni());
}

static PyMethodDef methods[] = {
    {"linear", (PyCFunction)(void (*)(void))py_linear, METH_FASTCALL,
     "linear(x, rows, in, outs, packed, w_scale, colsum, bias, out, relu, portable, threads): raw addresses and"
     " sizes; see streamvox.engine.ar.cpu_linear."},
    {"pack", (PyCFunction)(void (*)(void))py_pack, METH_FASTCALL,
     "pack(weight, outs, in, packed, w_scale, colsum): raw addresses and sizes; see streamvox.engine.ar.cpu_linear."},
    {"fast_path", py_fast_path, METH_NOARGS, "fast_path(): whether this CPU runs the AVX-512 VNNI path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_cpu_linear",
    .m_doc = "int8 linear layers for a decode step's few rows on a CPU (AVX-512 VNNI).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__cpu_linear(void) { return PyModule_Create(&module); }
