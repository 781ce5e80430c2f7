/* Fused attention for autoregressive decoders on a CPU: the decode step's and the prefill's.
 *
 * The step: one new query per (stream, head) against that stream's cached keys and values.  Done
 * with torch's batched products that is batch * heads tiny matrix products per layer, each a
 * library call that costs more than the bytes it reads (a batch-16 GPT-SoVITS step spent 18 of its
 * 26 ms there, reading the cache at about 20 GB/s).  Here each (stream, head) is one pass: write
 * the step's new key and value at the stream's position, score against the stream's live
 * positions only (no mask, no padding to the longest stream), softmax, weighted sum of the values;
 * the OpenMP team is spread over (stream, head) pairs.
 *
 * The prefill: every row of a sequence against a prefix of the same sequence (see run_prefill).
 *
 * Cache layout (one layer): [2][slots][heads][max_len][head_dim], keys then values, float32 or
 * bfloat16 (the upper half of a float32, rounded to nearest even when written).  qkv is the
 * step's fused projection, [batch][3 * hidden] float32: queries, keys, values, each [heads][head_dim].
 *
 * Two code paths give the same result up to float rounding: AVX-512F intrinsics for head_dim a
 * multiple of 16 (chosen at run time when the CPU has them) and portable C for anything else.
 * The exponential is a polynomial (relative error about 2e-7), the same on both paths.
 *
 * Thread-safety: a call writes only its streams' cache rows at their positions and its output
 * rows, so calls on different streams may run at once; the same stream twice in one call, or in
 * two concurrent calls, is a race (the caller's contract).  The GIL is released while it runs.
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
#else
#define HAVE_X86 0
#endif

enum { CACHE_F32 = 0, CACHE_BF16 = 1 };

static inline uint16_t to_bf16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u); /* NaN stays NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline float from_bf16(uint16_t x) {
    uint32_t bits = (uint32_t)x << 16;
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* exp(x) for x <= 0 (a softmax's shifted scores): 2^n * p(r), r = x - n ln 2, |r| <= ln 2 / 2. */
static const float EXP_LOG2E = 1.44269504088896341f, EXP_LN2_HI = 0.693359375f, EXP_LN2_LO = -2.12194440e-4f;
static const float EXP_P[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                               4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

static inline float exp_nonpositive(float x) {
    if (x < -87.0f) return 0.0f;
    float n = nearbyintf(x * EXP_LOG2E);
    float r = x - n * EXP_LN2_HI - n * EXP_LN2_LO;
    float p = EXP_P[0];
    for (int i = 1; i < 6; i++) p = p * r + EXP_P[i];
    return ldexpf(p * r * r + r + 1.0f, (int)n);
}

/* ---- portable path ------------------------------------------------------------------------- */

static inline float load_one(const void *row, int64_t i, int bf16) {
    return bf16 ? from_bf16(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

/* One query over width key and value rows, row_stride elements apart (head_dim in a cache, a
 * whole qkv row in a prefill). */
static void head_portable(const float *q, const void *keys, const void *values, int bf16, int64_t width,
                          int64_t head_dim, int64_t row_stride, float scale, float *scores, float *out) {
    size_t item = bf16 ? 2 : 4;
    float top = -INFINITY;
    for (int64_t w = 0; w < width; w++) {
        const char *k = (const char *)keys + (size_t)(w * row_stride) * item;
        float dot = 0.0f;
        for (int64_t d = 0; d < head_dim; d++) dot += q[d] * load_one(k, d, bf16);
        scores[w] = dot * scale;
        if (scores[w] > top) top = scores[w];
    }
    float total = 0.0f;
    for (int64_t w = 0; w < width; w++) {
        scores[w] = exp_nonpositive(scores[w] - top);
        total += scores[w];
    }
    for (int64_t d = 0; d < head_dim; d++) out[d] = 0.0f;
    for (int64_t w = 0; w < width; w++) {
        const char *v = (const char *)values + (size_t)(w * row_stride) * item;
        for (int64_t d = 0; d < head_dim; d++) out[d] += scores[w] * load_one(v, d, bf16);
    }
    for (int64_t d = 0; d < head_dim; d++) out[d] /= total;
}

/* ---- AVX-512F path (head_dim a multiple of 16, at most 256) --------------------------------- */

#if HAVE_X86
#define AVX512 __attribute__((target("avx512f")))
#define MAX_VECTORS 16

AVX512 static inline __m512 load16(const void *row, int64_t i, int bf16) {
    if (bf16) {
        __m256i half = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
    }
    return _mm512_loadu_ps((const float *)row + i);
}

AVX512 static inline __m512 exp16(__m512 x) {
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(EXP_P[0]);
    for (int i = 1; i < 6; i++) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P[i]));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512 e = _mm512_scalef_ps(p, n);
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ), e, _mm512_setzero_ps());
}

/* The 16 lanes of t summed down to 4 (the rest of the sum is done four rows at a time). */
AVX512 static inline __m128 fold_to_4(__m512 t) {
    __m256 lo = _mm512_castps512_ps256(t);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1));
    __m256 a = _mm256_add_ps(lo, hi);
    return _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
}

/* scores[0 .. width) becomes exp(score - max); returns their sum.  scores has room for width
 * rounded up to 16 (the padding is written). */
AVX512 static inline float softmax_in_place(float *scores, int64_t width) {
    const int64_t padded = (width + 15) & ~(int64_t)15;
    for (int64_t w = width; w < padded; w++) scores[w] = -INFINITY;
    __m512 top16 = _mm512_set1_ps(-INFINITY);
    for (int64_t w = 0; w < padded; w += 16) top16 = _mm512_max_ps(top16, _mm512_loadu_ps(scores + w));
    const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(top16));
    __m512 total16 = _mm512_setzero_ps();
    for (int64_t w = 0; w < padded; w += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(scores + w), top));
        _mm512_storeu_ps(scores + w, e);
        total16 = _mm512_add_ps(total16, e);
    }
    return _mm512_reduce_add_ps(total16);
}

AVX512 static inline __m512 partial_dot(const __m512 *q, const void *row, int bf16, int vectors) {
    __m512 t = _mm512_mul_ps(q[0], load16(row, 0, bf16));
    for (int j = 1; j < vectors; j++) t = _mm512_fmadd_ps(q[j], load16(row, 16 * j, bf16), t);
    return t;
}

AVX512 static inline void head_avx512(const float *q_in, const void *keys, const void *values, int bf16,
                                      int64_t width, int vectors, float scale, float *scores, float *out) {
    const int64_t head_dim = 16 * vectors;
    const size_t item = bf16 ? 2 : 4;
    const char *k = (const char *)keys, *v = (const char *)values;
    const size_t row = (size_t)head_dim * item;
    __m512 q[MAX_VECTORS];
    for (int j = 0; j < vectors; j++) q[j] = _mm512_mul_ps(_mm512_loadu_ps(q_in + 16 * j), _mm512_set1_ps(scale));

    int64_t w = 0;
    for (; w + 4 <= width; w += 4) {
        __m128 a = fold_to_4(partial_dot(q, k + (w + 0) * row, bf16, vectors));
        __m128 b = fold_to_4(partial_dot(q, k + (w + 1) * row, bf16, vectors));
        __m128 c = fold_to_4(partial_dot(q, k + (w + 2) * row, bf16, vectors));
        __m128 d = fold_to_4(partial_dot(q, k + (w + 3) * row, bf16, vectors));
        _mm_storeu_ps(scores + w, _mm_hadd_ps(_mm_hadd_ps(a, b), _mm_hadd_ps(c, d)));
    }
    for (; w < width; w++) scores[w] = _mm512_reduce_add_ps(partial_dot(q, k + w * row, bf16, vectors));
    const float total = softmax_in_place(scores, width);

    /* Two interleaved accumulator sets: one FMA chain per vector would wait on its own latency. */
    __m512 even[MAX_VECTORS], odd[MAX_VECTORS];
    for (int j = 0; j < vectors; j++) even[j] = odd[j] = _mm512_setzero_ps();
    for (w = 0; w + 2 <= width; w += 2) {
        __m512 p0 = _mm512_set1_ps(scores[w]), p1 = _mm512_set1_ps(scores[w + 1]);
        for (int j = 0; j < vectors; j++) {
            even[j] = _mm512_fmadd_ps(p0, load16(v + w * row, 16 * j, bf16), even[j]);
            odd[j] = _mm512_fmadd_ps(p1, load16(v + (w + 1) * row, 16 * j, bf16), odd[j]);
        }
    }
    if (w < width) {
        __m512 p0 = _mm512_set1_ps(scores[w]);
        for (int j = 0; j < vectors; j++) even[j] = _mm512_fmadd_ps(p0, load16(v + w * row, 16 * j, bf16), even[j]);
    }
    const __m512 inverse = _mm512_set1_ps(1.0f / total);
    for (int j = 0; j < vectors; j++) _mm512_storeu_ps(out + 16 * j, _mm512_mul_ps(_mm512_add_ps(even[j], odd[j]), inverse));
}

/* bfloat16 rows of a multiple of 32: a 64-byte load holds 32 values, element 2i in the low half of
 * 32-bit lane i and 2i + 1 in its high half, so one shift and one mask give two float32 vectors
 * (the even and the odd elements) without widening.  The query is split the same way once, the
 * value sums are kept split and put back in order at the end. */
AVX512 static inline void split_bf16(const uint16_t *row, __m512 *even, __m512 *odd) {
    __m512i x = _mm512_loadu_si512((const void *)row);
    *even = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
    *odd = _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32((int)0xffff0000u)));
}

AVX512 static inline __m512 partial_dot_bf16(const __m512 *q_even, const __m512 *q_odd, const uint16_t *row,
                                             int blocks) {
    __m512 even, odd;
    split_bf16(row, &even, &odd);
    __m512 t = _mm512_fmadd_ps(q_odd[0], odd, _mm512_mul_ps(q_even[0], even));
    for (int j = 1; j < blocks; j++) {
        split_bf16(row + 32 * j, &even, &odd);
        t = _mm512_fmadd_ps(q_even[j], even, t);
        t = _mm512_fmadd_ps(q_odd[j], odd, t);
    }
    return t;
}

AVX512 static inline void head_avx512_bf16(const float *q_in, const uint16_t *keys, const uint16_t *values,
                                           int64_t width, int blocks, float scale, float *scores, float *out) {
    const int64_t head_dim = 32 * blocks;
    const __m512i even_at = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd_at = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512 q_even[MAX_VECTORS / 2], q_odd[MAX_VECTORS / 2];
    for (int j = 0; j < blocks; j++) {
        __m512 lo = _mm512_mul_ps(_mm512_loadu_ps(q_in + 32 * j), _mm512_set1_ps(scale));
        __m512 hi = _mm512_mul_ps(_mm512_loadu_ps(q_in + 32 * j + 16), _mm512_set1_ps(scale));
        q_even[j] = _mm512_permutex2var_ps(lo, even_at, hi);
        q_odd[j] = _mm512_permutex2var_ps(lo, odd_at, hi);
    }
    int64_t w = 0;
    for (; w + 4 <= width; w += 4) {
        __m128 a = fold_to_4(partial_dot_bf16(q_even, q_odd, keys + (w + 0) * head_dim, blocks));
        __m128 b = fold_to_4(partial_dot_bf16(q_even, q_odd, keys + (w + 1) * head_dim, blocks));
        __m128 c = fold_to_4(partial_dot_bf16(q_even, q_odd, keys + (w + 2) * head_dim, blocks));
        __m128 d = fold_to_4(partial_dot_bf16(q_even, q_odd, keys + (w + 3) * head_dim, blocks));
        _mm_storeu_ps(scores + w, _mm_hadd_ps(_mm_hadd_ps(a, b), _mm_hadd_ps(c, d)));
    }
    for (; w < width; w++) scores[w] = _mm512_reduce_add_ps(partial_dot_bf16(q_even, q_odd, keys + w * head_dim, blocks));
    const float total = softmax_in_place(scores, width);

    /* Two positions at a time into two sets of sums, as in head_avx512: more FMA chains in flight. */
    __m512 sum_even[MAX_VECTORS / 2], sum_odd[MAX_VECTORS / 2], next_even[MAX_VECTORS / 2], next_odd[MAX_VECTORS / 2];
    for (int j = 0; j < blocks; j++) sum_even[j] = sum_odd[j] = next_even[j] = next_odd[j] = _mm512_setzero_ps();
    for (w = 0; w + 2 <= width; w += 2) {
        const __m512 p0 = _mm512_set1_ps(scores[w]), p1 = _mm512_set1_ps(scores[w + 1]);
        for (int j = 0; j < blocks; j++) {
            __m512 even, odd;
            split_bf16(values + w * head_dim + 32 * j, &even, &odd);
            sum_even[j] = _mm512_fmadd_ps(p0, even, sum_even[j]);
            sum_odd[j] = _mm512_fmadd_ps(p0, odd, sum_odd[j]);
            split_bf16(values + (w + 1) * head_dim + 32 * j, &even, &odd);
            next_even[j] = _mm512_fmadd_ps(p1, even, next_even[j]);
            next_odd[j] = _mm512_fmadd_ps(p1, odd, next_odd[j]);
        }
    }
    if (w < width) {
        const __m512 p0 = _mm512_set1_ps(scores[w]);
        for (int j = 0; j < blocks; j++) {
            __m512 even, odd;
            split_bf16(values + w * head_dim + 32 * j, &even, &odd);
            sum_even[j] = _mm512_fmadd_ps(p0, even, sum_even[j]);
            sum_odd[j] = _mm512_fmadd_ps(p0, odd, sum_odd[j]);
        }
    }
    for (int j = 0; j < blocks; j++) {
        sum_even[j] = _mm512_add_ps(sum_even[j], next_even[j]);
        sum_odd[j] = _mm512_add_ps(sum_odd[j], next_odd[j]);
    }
    const __m512i low_at = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i high_at = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const __m512 inverse = _mm512_set1_ps(1.0f / total);
    for (int j = 0; j < blocks; j++) {
        __m512 even = _mm512_mul_ps(sum_even[j], inverse), odd = _mm512_mul_ps(sum_odd[j], inverse);
        _mm512_storeu_ps(out + 32 * j, _mm512_permutex2var_ps(even, low_at, odd));
        _mm512_storeu_ps(out + 32 * j + 16, _mm512_permutex2var_ps(even, high_at, odd));
    }
}

/* head_dim 32 (GPT-SoVITS v2) with the vector count known at compile time, so loops unroll. */
AVX512 static void head_avx512_32(const float *q, const void *keys, const void *values, int bf16, int64_t width,
                                  float scale, float *scores, float *out) {
    head_avx512(q, keys, values, bf16, width, 2, scale, scores, out);
}

AVX512 static void head_avx512_bf16_32(const float *q, const void *keys, const void *values, int64_t width,
                                       float scale, float *scores, float *out) {
    head_avx512_bf16(q, (const uint16_t *)keys, (const uint16_t *)values, width, 1, scale, scores, out);
}

AVX512 static void head_avx512_any(const float *q, const void *keys, const void *values, int bf16, int64_t width,
                                   int vectors, float scale, float *scores, float *out) {
    head_avx512(q, keys, values, bf16, width, vectors, scale, scores, out);
}

static int cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}
#else
static int cpu_has_avx512(void) { return 0; }
#endif

/* ---- the step --------------------------------------------------------------------------------- */

typedef struct {
    const float *qkv;
    void *cache;
    const int64_t *slot_ids, *positions;
    float *out;
    int64_t batch, heads, head_dim, slots, max_len;
    float scale;
    int bf16, fast;
} Step;

/* One (stream, head) of a step; scores has room for max_len rounded up to 16. */
static void step_pair(const Step *s, int64_t pair, float *scores) {
    const int64_t hidden = s->heads * s->head_dim;
    const size_t item = s->bf16 ? 2 : 4;
    const int64_t b = pair / s->heads, h = pair % s->heads;
    const int64_t slot = s->slot_ids[b], position = s->positions[b];
    const int64_t width = position + 1;
    const size_t head_rows = (size_t)(s->max_len * s->head_dim);
    char *keys = (char *)s->cache + ((size_t)(slot * s->heads + h) * head_rows) * item;
    char *values = (char *)s->cache + ((size_t)((s->slots + slot) * s->heads + h) * head_rows) * item;
    const float *row = s->qkv + b * 3 * hidden;
    const float *new_key = row + hidden + h * s->head_dim, *new_value = row + 2 * hidden + h * s->head_dim;
    char *key_at = keys + (size_t)(position * s->head_dim) * item;
    char *value_at = values + (size_t)(position * s->head_dim) * item;
    if (s->bf16) {
        for (int64_t d = 0; d < s->head_dim; d++) {
            ((uint16_t *)key_at)[d] = to_bf16(new_key[d]);
            ((uint16_t *)value_at)[d] = to_bf16(new_value[d]);
        }
    } else {
        memcpy(key_at, new_key, (size_t)s->head_dim * sizeof(float));
        memcpy(value_at, new_value, (size_t)s->head_dim * sizeof(float));
    }
    const float *q = row + h * s->head_dim;
    float *out = s->out + b * hidden + h * s->head_dim;
#if HAVE_X86
    if (s->fast && s->bf16 && s->head_dim == 32) {
        head_avx512_bf16_32(q, keys, values, width, s->scale, scores, out);
        return;
    }
    if (s->fast && s->bf16 && s->head_dim % 32 == 0) {
        head_avx512_bf16(q, (const uint16_t *)keys, (const uint16_t *)values, width, (int)(s->head_dim / 32),
                         s->scale, scores, out);
        return;
    }
    if (s->fast && s->head_dim == 32) {
        head_avx512_32(q, keys, values, s->bf16, width, s->scale, scores, out);
        return;
    }
    if (s->fast) {
        head_avx512_any(q, keys, values, s->bf16, width, (int)(s->head_dim / 16), s->scale, scores, out);
        return;
    }
#endif
    head_portable(q, keys, values, s->bf16, width, s->head_dim, s->head_dim, s->scale, scores, out);
}

/* Returns 0, or -1 when a buffer could not be allocated (the scores live on the heap: a stack
 * array as long as a long cache could overflow an OpenMP thread's stack). */
static int run_step(const Step *s, int threads) {
    const int64_t pairs = s->batch * s->heads, padded = (s->max_len + 15) & ~(int64_t)15;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float *scores = malloc((size_t)padded * sizeof(float));
        if (scores == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t pair = 0; pair < pairs; pair++)
            if (scores != NULL) step_pair(s, pair, scores);
        free(scores);
    }
    return failed ? -1 : 0;
}

/* ---- the prefill: every row of a sequence attends to a prefix of it ------------------------------ */

/* A prefill attends T query rows to the same sequence's keys, row i to keys 0 .. widths[i] - 1
 * (GPT-SoVITS's prefix-LM mask: text rows see the text, audio rows the text and the audio up to
 * themselves).  Per head, the keys are transposed once into 16-key blocks (head_dim rows of 16),
 * so a row's scores for 16 keys are head_dim broadcast FMAs with no horizontal sums; the values
 * are summed as in the step.  Rows read keys and values straight from qkv ([T][3 * hidden]). */

#if HAVE_X86
AVX512 static void prefix_head_avx512(const float *qkv, int64_t length, int64_t hidden, int64_t h, int vectors,
                                      const int64_t *widths, float scale, float *keys_t, float *values,
                                      float *scores, float *out) {
    const int64_t head_dim = 16 * vectors, stride = 3 * hidden;
    const int64_t blocks = (length + 15) / 16;
    /* The head's values, packed: in qkv its rows are 3 * hidden floats apart, a page or more, and
     * every row of the prefill reads them all again. */
    for (int64_t w = 0; w < length; w++)
        memcpy(values + w * head_dim, qkv + w * stride + 2 * hidden + h * head_dim, (size_t)head_dim * sizeof(float));
    for (int64_t block = 0; block < blocks; block++) {
        float *dst = keys_t + block * head_dim * 16;
        for (int64_t j = 0; j < 16; j++) {
            const int64_t w = block * 16 + j;
            const float *key = qkv + w * stride + hidden + h * head_dim;
            for (int64_t d = 0; d < head_dim; d++) dst[d * 16 + j] = w < length ? key[d] : 0.0f;
        }
    }
    for (int64_t i = 0; i < length; i++) {
        const float *q = qkv + i * stride + h * head_dim;
        const int64_t width = widths[i];
        for (int64_t block = 0; block < (width + 15) / 16; block++) {
            const float *src = keys_t + block * head_dim * 16;
            /* four sums in flight: one chain would wait out each FMA's latency (head_dim is a multiple of 16) */
            __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps(), c = _mm512_setzero_ps(), e = _mm512_setzero_ps();
            for (int64_t d = 0; d < head_dim; d += 4) {
                a = _mm512_fmadd_ps(_mm512_set1_ps(q[d]), _mm512_loadu_ps(src + d * 16), a);
                b = _mm512_fmadd_ps(_mm512_set1_ps(q[d + 1]), _mm512_loadu_ps(src + (d + 1) * 16), b);
                c = _mm512_fmadd_ps(_mm512_set1_ps(q[d + 2]), _mm512_loadu_ps(src + (d + 2) * 16), c);
                e = _mm512_fmadd_ps(_mm512_set1_ps(q[d + 3]), _mm512_loadu_ps(src + (d + 3) * 16), e);
            }
            __m512 sum = _mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, e));
            _mm512_storeu_ps(scores + block * 16, _mm512_mul_ps(sum, _mm512_set1_ps(scale)));
        }
        const float total = softmax_in_place(scores, width);
        __m512 even[MAX_VECTORS], odd[MAX_VECTORS];
        for (int j = 0; j < vectors; j++) even[j] = odd[j] = _mm512_setzero_ps();
        int64_t w = 0;
        for (; w + 2 <= width; w += 2) {
            const float *v0 = values + w * head_dim, *v1 = v0 + head_dim;
            const __m512 p0 = _mm512_set1_ps(scores[w]), p1 = _mm512_set1_ps(scores[w + 1]);
            for (int j = 0; j < vectors; j++) {
                even[j] = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0 + 16 * j), even[j]);
                odd[j] = _mm512_fmadd_ps(p1, _mm512_loadu_ps(v1 + 16 * j), odd[j]);
            }
        }
        if (w < width) {
            const float *v0 = values + w * head_dim;
            const __m512 p0 = _mm512_set1_ps(scores[w]);
            for (int j = 0; j < vectors; j++) even[j] = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0 + 16 * j), even[j]);
        }
        const __m512 inverse = _mm512_set1_ps(1.0f / total);
        float *o = out + i * hidden + h * head_dim;
        for (int j = 0; j < vectors; j++) _mm512_storeu_ps(o + 16 * j, _mm512_mul_ps(_mm512_add_ps(even[j], odd[j]), inverse));
    }
}
#endif

static void prefix_head_portable(const float *qkv, int64_t length, int64_t hidden, int64_t h, int64_t head_dim,
                                 const int64_t *widths, float scale, float *scores, float *out) {
    const int64_t stride = 3 * hidden;
    const float *keys = qkv + hidden + h * head_dim, *values = qkv + 2 * hidden + h * head_dim;
    for (int64_t i = 0; i < length; i++)
        head_portable(qkv + i * stride + h * head_dim, keys, values, 0, widths[i], head_dim, stride, scale, scores,
                      out + i * hidden + h * head_dim);
}

typedef struct {
    const float *qkv;
    const int64_t *widths;
    float *out;
    int64_t length, heads, head_dim;
    float scale;
    int fast;
} Prefill;

/* Returns 0, or -1 when a buffer could not be allocated. */
static int run_prefill(const Prefill *p, int threads) {
    const int64_t hidden = p->heads * p->head_dim, padded = (p->length + 15) & ~(int64_t)15;
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float *scores = malloc((size_t)padded * sizeof(float));
        float *keys_t = p->fast ? malloc((size_t)(2 * padded * p->head_dim) * sizeof(float)) : NULL;
        if (scores == NULL || (p->fast && keys_t == NULL)) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t h = 0; h < p->heads; h++) {
            if (scores == NULL || (p->fast && keys_t == NULL)) continue;
#if HAVE_X86
            if (p->fast) {
                prefix_head_avx512(p->qkv, p->length, hidden, h, (int)(p->head_dim / 16), p->widths, p->scale, keys_t,
                                   keys_t + padded * p->head_dim, scores, p->out);
                continue;
            }
#endif
            prefix_head_portable(p->qkv, p->length, hidden, h, p->head_dim, p->widths, p->scale, scores, p->out);
        }
        free(scores);
        free(keys_t);
    }
    return failed ? -1 : 0;
}

/* ---- Python binding --------------------------------------------------------------------------- */

static int fast_path_usable(int64_t head_dim) {
    return cpu_has_avx512() && head_dim % 16 == 0 && head_dim / 16 <= 16;
}

/* The entry points take addresses and sizes as ints and one float (the softmax scale, at
 * scale_at): into values[] and *scale.  Returns 0, or -1 with a Python error set. */
static int read_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t expected, Py_ssize_t scale_at,
                     const char *name, int64_t *values, double *scale) {
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", name, expected);
        return -1;
    }
    for (Py_ssize_t i = 0; i < expected; i++) {
        if (i == scale_at) continue;
        values[i] = PyLong_AsLongLong(args[i]);
        if (values[i] == -1 && PyErr_Occurred()) return -1;
    }
    *scale = PyFloat_AsDouble(args[scale_at]);
    return *scale == -1.0 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *py_decode_attention(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    Step s;
    int64_t values[14];
    double scale;
    if (read_args(args, nargs, 14, 10, "decode_attention", values, &scale) != 0) return NULL;
    s.qkv = (const float *)(uintptr_t)values[0];
    s.cache = (void *)(uintptr_t)values[1];
    s.slot_ids = (const int64_t *)(uintptr_t)values[2];
    s.positions = (const int64_t *)(uintptr_t)values[3];
    s.out = (float *)(uintptr_t)values[4];
    s.batch = values[5];
    s.heads = values[6];
    s.head_dim = values[7];
    s.slots = values[8];
    s.max_len = values[9];
    s.scale = (float)scale;
    s.bf16 = values[11] == CACHE_BF16;
    int portable = values[12] != 0;
    int threads = (int)values[13];
    if (s.batch < 0 || s.heads < 1 || s.head_dim < 1 || s.slots < 1 || s.max_len < 1 || threads < 1 ||
        (values[11] != CACHE_F32 && values[11] != CACHE_BF16)) {
        PyErr_SetString(PyExc_ValueError, "decode_attention: bad sizes, cache type or thread count");
        return NULL;
    }
    s.fast = !portable && fast_path_usable(s.head_dim);
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = run_step(&s, threads);
    Py_END_ALLOW_THREADS
    if (status != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_prefix_attention(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    int64_t values[9];
    double scale;
    if (read_args(args, nargs, 9, 6, "prefix_attention", values, &scale) != 0) return NULL;
    Prefill p;
    p.qkv = (const float *)(uintptr_t)values[0];
    p.widths = (const int64_t *)(uintptr_t)values[1];
    p.out = (float *)(uintptr_t)values[2];
    p.length = values[3];
    p.heads = values[4];
    p.head_dim = values[5];
    p.scale = (float)scale;
    int portable = values[7] != 0, threads = (int)values[8];
    if (p.length < 1 || p.heads < 1 || p.head_dim < 1 || threads < 1) {
        PyErr_SetString(PyExc_ValueError, "prefix_attention: bad sizes or thread count");
        return NULL;
    }
    p.fast = !portable && fast_path_usable(p.head_dim);
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = run_prefill(&p, threads);
    Py_END_ALLOW_THREADS
    if (status != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_fast_path(PyObject *self, PyObject *arg) {
    (void)self;
    int64_t head_dim = PyLong_AsLongLong(arg);
    if (head_dim == -1 && PyErr_Occurred()) return NULL;
    return PyBool_FromLong(fast_path_usable(head_dim));
}

static PyMethodDef methods[] = {
    {"decode_attention", (PyCFunction)(void (*)(void))py_decode_attention, METH_FASTCALL,
     "decode_attention(qkv, cache, slot_ids, positions, out, batch, heads, head_dim, slots, max_len, scale,"
     " cache_type, portable, threads): raw addresses and sizes; see streamvox.engine.ar.cpu_attention."},
    {"prefix_attention", (PyCFunction)(void (*)(void))py_prefix_attention, METH_FASTCALL,
     "prefix_attention(qkv, widths, out, length, heads, head_dim, scale, portable, threads): raw addresses and"
     " sizes; see streamvox.engine.ar.cpu_attention."},
    {"fast_path", py_fast_path, METH_O, "fast_path(head_dim): whether the AVX-512 path runs for this head size."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_cpu_attention",
    .m_doc = "Fused attention kernels for AR decoders on a CPU: the decode step and the prefill.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__cpu_attention(void) { return PyModule_Create(&module); }
