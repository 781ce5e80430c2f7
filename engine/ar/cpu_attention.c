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
 * Cache layout (one layer): [2][slots][heads][max_len][head_dim], keys then values, float32,
 * bfloat16 (the upper half of a float32, rounded to nearest even when written) or int8.  An int8
 * cache keeps one float32 scale per row (a row is its int8 values times its scale, the largest
 * magnitude mapped to 127, rounded to nearest even), [2][slots][heads][max_len] beside the cache.
 * Its values are plain rows; its keys are stored plus 128 (as uint8) in blocks of 16 positions,
 * each block [head_dim / 4][16][4], so one 64-byte load holds 4 dimensions of 16 keys: the shape
 * the VNNI instruction (u8 x s8, 4 products summed into each of 16 int32 lanes) wants, with no
 * horizontal sums.  The query is split into two int8 parts (q = hi * s + lo * s / 254, 15 bits in
 * all), so the scores are exact integer sums over the cache's int8 keys.  max_len is then a
 * multiple of 16 and head_dim of 4.  qkv is the step's fused projection, [batch][3 * hidden]
 * float32: queries, keys, values, each [heads][head_dim].
 *
 * Two code paths give the same result up to float rounding: AVX-512F intrinsics (and VNNI for an
 * int8 cache) for head_dim a multiple of 16, chosen at run time when the CPU has them, and portable
 * C for anything else.
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

enum { CACHE_F32 = 0, CACHE_BF16 = 1, CACHE_I8 = 2 };

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

enum { MAX_I8_HEAD_DIM = 256, PAIRS_PER_FLUSH = 128 };

static inline int8_t clamp_i8(float q) { return (int8_t)(q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q); }

/* One row of n values as int8 and its scale (see the cache layout above); all zero for a zero row,
 * or for one holding a NaN or an infinity (nothing finite stands for it). */
static void quantize_row(const float *x, int64_t n, int8_t *out, float *scale) {
    float top = 0.0f;
    int finite = 1;
    for (int64_t d = 0; d < n; d++) {
        const float a = fabsf(x[d]);
        finite &= a <= 3.40282347e38f;
        top = a > top ? a : top;
    }
    if (!finite || top == 0.0f) {
        memset(out, 0, (size_t)n);
        *scale = 0.0f;
        return;
    }
    const float inverse = 127.0f / top;
    for (int64_t d = 0; d < n; d++) out[d] = clamp_i8(nearbyintf(x[d] * inverse));
    *scale = top / 127.0f;
}

/* Where dimension d of position p lies in one (slot, head)'s int8 keys (16-position blocks of
 * [head_dim / 4][16][4]) and values (position pairs, [head_dim][2]). */
static inline size_t key_offset(int64_t p, int64_t d, int64_t head_dim) {
    return (size_t)((p / 16) * head_dim * 16 + (d / 4) * 64 + (p % 16) * 4 + d % 4);
}

static inline size_t value_offset(int64_t p, int64_t d, int64_t head_dim) {
    return (size_t)((p / 2) * 2 * head_dim + d * 2 + p % 2);
}

/* Place a quantised row q at position p: a key plus 128 into its block (4 bytes per 64), a value
 * into its pair (every other byte); place_value_pair writes both rows of an even position's pair. */
static void place_key(const int8_t *q, int64_t head_dim, uint8_t *keys, int64_t p) {
    uint8_t biased[MAX_I8_HEAD_DIM];
    for (int64_t d = 0; d < head_dim; d++) biased[d] = (uint8_t)(q[d] + 128);
    uint8_t *at = keys + key_offset(p, 0, head_dim);
    for (int64_t g = 0; g < head_dim / 4; g++) memcpy(at + 64 * g, biased + 4 * g, 4);
}

static void place_value(const int8_t *q, int64_t head_dim, int8_t *values, int64_t p) {
    for (int64_t d = 0; d < head_dim; d++) values[value_offset(p, d, head_dim)] = q[d];
}

static void place_value_pair(const int8_t *first, const int8_t *second, int64_t head_dim, int8_t *values, int64_t p) {
    int8_t *at = values + value_offset(p, 0, head_dim);
    for (int64_t d = 0; d < head_dim; d++) {
        at[2 * d] = first[d];
        at[2 * d + 1] = second[d];
    }
}

/* A query as two int8 parts, q ~ hi * unit + lo * unit / 254 (lo is what hi leaves, about 15 bits
 * in all), with each part's sum: the keys' +128 adds 128 * sum to a dot product, taken off again. */
typedef struct {
    int8_t hi[MAX_I8_HEAD_DIM], lo[MAX_I8_HEAD_DIM];
    float unit_hi, unit_lo;
    int32_t sum_hi, sum_lo;
} SplitQuery;

static void split_query(const float *q, int64_t head_dim, SplitQuery *out) {
    quantize_row(q, head_dim, out->hi, &out->unit_hi);
    out->unit_lo = out->unit_hi / 254.0f;
    const float inverse = out->unit_lo > 0.0f ? 1.0f / out->unit_lo : 0.0f;
    out->sum_hi = out->sum_lo = 0;
    for (int64_t d = 0; d < head_dim; d++) {
        out->lo[d] = clamp_i8(nearbyintf(fmaf(-(float)out->hi[d], out->unit_hi, q[d]) * inverse));
        out->sum_hi += out->hi[d];
        out->sum_lo += out->lo[d];
    }
}

/* The softmax weights times the value scales as int16, the largest 32767, ready for the pair sums;
 * returns the unit (a weight is its int16 times the unit).  weights has room for width rounded up
 * to 16, and is zero past width. */
static float value_weights(const float *scores, const float *value_scales, int64_t width, int16_t *weights) {
    const int64_t padded = (width + 15) & ~(int64_t)15;
    float top = 0.0f;
    for (int64_t w = 0; w < width; w++) {
        const float a = scores[w] * value_scales[w];
        top = a > top ? a : top;
    }
    const float inverse = top > 0.0f ? 32767.0f / top : 0.0f;
    for (int64_t w = 0; w < width; w++) weights[w] = (int16_t)nearbyintf(scores[w] * value_scales[w] * inverse);
    for (int64_t w = width; w < padded; w++) weights[w] = 0;
    return top / 32767.0f;
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

/* head_portable over an int8 cache (layout above): the same integer sums as the VNNI path. */
static void head_portable_i8(const SplitQuery *q, const uint8_t *keys, const float *key_scales, const int8_t *values,
                             const float *value_scales, int64_t width, int64_t head_dim, float scale, float *scores,
                             int16_t *weights, float *out) {
    const float hi_unit = q->unit_hi * scale, lo_unit = q->unit_lo * scale;
    float top = -INFINITY;
    for (int64_t w = 0; w < width; w++) {
        int32_t hi = 0, lo = 0;
        for (int64_t d = 0; d < head_dim; d++) {
            const int32_t k = (int32_t)keys[key_offset(w, d, head_dim)] - 128;
            hi += k * q->hi[d];
            lo += k * q->lo[d];
        }
        scores[w] = fmaf(hi_unit, (float)hi, lo_unit * (float)lo) * key_scales[w];
        if (scores[w] > top) top = scores[w];
    }
    float total = 0.0f;
    for (int64_t w = 0; w < width; w++) {
        scores[w] = exp_nonpositive(scores[w] - top);
        total += scores[w];
    }
    const float unit = value_weights(scores, value_scales, width, weights) / total;
    for (int64_t d = 0; d < head_dim; d++) {
        int64_t sum = 0;
        for (int64_t w = 0; w < width; w++) sum += (int64_t)weights[w] * values[value_offset(w, d, head_dim)];
        out[d] = (float)sum * unit;
    }
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

/* As head_avx512 over bfloat16 rows of a multiple of 32.  Each head's rows are a few KB, too short
 * for the hardware prefetcher: the values are asked for while the keys are scored, and next_keys
 * (the next head's, or NULL) while the values are summed (24 layers of a batch-16 step at width
 * 250: 4.7 against 3.2 ms; the fp32 rows, twice as long, gained nothing from it). */
AVX512 static inline void head_avx512_bf16(const float *q_in, const uint16_t *keys, const uint16_t *values,
                                           int64_t width, int blocks, float scale, float *scores,
                                           const uint16_t *next_keys, float *out) {
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
        for (int64_t line = 0; line < 4 * head_dim * 2; line += 64)
            _mm_prefetch((const char *)(values + w * head_dim) + line, _MM_HINT_T0);
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
        if (next_keys != NULL)
            for (int64_t line = 0; line < 2 * head_dim * 2; line += 64)
                _mm_prefetch((const char *)(next_keys + w * head_dim) + line, _MM_HINT_T0);
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

/* ---- int8 cache: VNNI integer sums over the key blocks and the value pairs ----------------------- */
#define AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

/* quantize_row for n = 16 * vectors, with the same arithmetic (so the same bytes). */
AVX512_VNNI static inline void quantize_row_avx512(const float *x, int vectors, int8_t *out, float *scale) {
    const __m512 largest = _mm512_set1_ps(3.40282347e38f);
    __m512 top = _mm512_setzero_ps();
    __mmask16 finite = 0xffff;
    for (int j = 0; j < vectors; j++) {
        const __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + 16 * j));
        finite &= _mm512_cmp_ps_mask(a, largest, _CMP_LE_OQ);
        top = _mm512_max_ps(top, a);
    }
    const float t = _mm512_reduce_max_ps(top);
    if (finite != 0xffff || t == 0.0f) {
        memset(out, 0, (size_t)(16 * vectors));
        *scale = 0.0f;
        return;
    }
    const __m512 inverse = _mm512_set1_ps(127.0f / t);
    for (int j = 0; j < vectors; j++) {
        __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * j), inverse),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_min_ps(_mm512_max_ps(q, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
        _mm_storeu_si128((__m128i *)(out + 16 * j), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q)));
    }
    *scale = t / 127.0f;
}

/* split_query for head_dim = 16 * vectors, with the same arithmetic. */
AVX512_VNNI static inline void split_query_avx512(const float *q, int vectors, SplitQuery *out) {
    quantize_row_avx512(q, vectors, out->hi, &out->unit_hi);
    out->unit_lo = out->unit_hi / 254.0f;
    const __m512 unit = _mm512_set1_ps(out->unit_hi);
    const __m512 inverse = _mm512_set1_ps(out->unit_lo > 0.0f ? 1.0f / out->unit_lo : 0.0f);
    __m512i sum_hi = _mm512_setzero_si512(), sum_lo = _mm512_setzero_si512();
    for (int j = 0; j < vectors; j++) {
        const __m512i hi = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(out->hi + 16 * j)));
        const __m512 rest = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(hi), unit, _mm512_loadu_ps(q + 16 * j));
        __m512 lo = _mm512_roundscale_ps(_mm512_mul_ps(rest, inverse), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        lo = _mm512_min_ps(_mm512_max_ps(lo, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
        const __m512i lo_i = _mm512_cvtps_epi32(lo);
        _mm_storeu_si128((__m128i *)(out->lo + 16 * j), _mm512_cvtepi32_epi8(lo_i));
        sum_hi = _mm512_add_epi32(sum_hi, hi);
        sum_lo = _mm512_add_epi32(sum_lo, lo_i);
    }
    out->sum_hi = _mm512_reduce_add_epi32(sum_hi);
    out->sum_lo = _mm512_reduce_add_epi32(sum_lo);
}

/* value_weights over scores padded to 16 (softmax_in_place leaves zeros past width), the same arithmetic. */
AVX512_VNNI static inline float value_weights_avx512(const float *scores, const float *value_scales, int64_t width,
                                                     int16_t *weights) {
    const int64_t padded = (width + 15) & ~(int64_t)15;
    __m512 top16 = _mm512_setzero_ps();
    for (int64_t w = 0; w < padded; w += 16) {
        const __mmask16 live = w + 16 <= width ? 0xffff : (__mmask16)((1u << (width - w)) - 1u);
        const __m512 a = _mm512_maskz_mul_ps(live, _mm512_loadu_ps(scores + w), _mm512_loadu_ps(value_scales + w));
        top16 = _mm512_max_ps(top16, a);
    }
    const float top = _mm512_reduce_max_ps(top16);
    const __m512 inverse = _mm512_set1_ps(top > 0.0f ? 32767.0f / top : 0.0f);
    for (int64_t w = 0; w < padded; w += 16) {
        const __mmask16 live = w + 16 <= width ? 0xffff : (__mmask16)((1u << (width - w)) - 1u);
        const __m512 a = _mm512_maskz_mul_ps(live, _mm512_loadu_ps(scores + w), _mm512_loadu_ps(value_scales + w));
        const __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(a, inverse), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_si256((__m256i *)(weights + w), _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(q)));
    }
    return top / 32767.0f;
}

/* The 16 scores of one key block, both query parts: each 64-byte load is 4 dimensions of 16 keys. */
AVX512_VNNI static inline __m512 block_scores_i8(const uint8_t *block, const int32_t *hi_words, const int32_t *lo_words,
                                                 int groups, __m512i hi_bias, __m512i lo_bias, __m512 hi_unit,
                                                 __m512 lo_unit) {
    __m512i hi = _mm512_setzero_si512(), lo = _mm512_setzero_si512();
    __m512i hi2 = _mm512_setzero_si512(), lo2 = _mm512_setzero_si512();
    int g = 0;
    for (; g + 2 <= groups; g += 2) { /* two chains per part: each VNNI waits on its own sum */
        const __m512i k0 = _mm512_loadu_si512((const void *)(block + 64 * g));
        const __m512i k1 = _mm512_loadu_si512((const void *)(block + 64 * (g + 1)));
        hi = _mm512_dpbusd_epi32(hi, k0, _mm512_set1_epi32(hi_words[g]));
        lo = _mm512_dpbusd_epi32(lo, k0, _mm512_set1_epi32(lo_words[g]));
        hi2 = _mm512_dpbusd_epi32(hi2, k1, _mm512_set1_epi32(hi_words[g + 1]));
        lo2 = _mm512_dpbusd_epi32(lo2, k1, _mm512_set1_epi32(lo_words[g + 1]));
    }
    if (g < groups) {
        const __m512i k0 = _mm512_loadu_si512((const void *)(block + 64 * g));
        hi = _mm512_dpbusd_epi32(hi, k0, _mm512_set1_epi32(hi_words[g]));
        lo = _mm512_dpbusd_epi32(lo, k0, _mm512_set1_epi32(lo_words[g]));
    }
    hi = _mm512_sub_epi32(_mm512_add_epi32(hi, hi2), hi_bias);
    lo = _mm512_sub_epi32(_mm512_add_epi32(lo, lo2), lo_bias);
    return _mm512_fmadd_ps(hi_unit, _mm512_cvtepi32_ps(hi), _mm512_mul_ps(lo_unit, _mm512_cvtepi32_ps(lo)));
}

/* Sums of weights[w] * values[w] over position pairs, 16 dimensions of both positions per 32-byte
 * load (widened to int16 for VNNI's int16 pair products), flushed to float every PAIRS_PER_FLUSH
 * pairs so the int32 sums cannot overflow (128 pairs of 2 * 32767 * 127 each). */
AVX512_VNNI static inline void pair_sums_i8(const int8_t *values, const int16_t *weights, int64_t width, int vectors,
                                            float unit, const char *ahead, float *out) {
    const int64_t head_dim = 16 * vectors, pairs = (width + 1) / 2;
    __m512 total[MAX_VECTORS];
    for (int j = 0; j < vectors; j++) total[j] = _mm512_setzero_ps();
    for (int64_t start = 0; start < pairs; start += PAIRS_PER_FLUSH) {
        const int64_t end = start + PAIRS_PER_FLUSH < pairs ? start + PAIRS_PER_FLUSH : pairs;
        __m512i a[MAX_VECTORS], b[MAX_VECTORS];
        for (int j = 0; j < vectors; j++) a[j] = b[j] = _mm512_setzero_si512();
        int64_t p = start;
        for (; p + 2 <= end; p += 2) { /* two pairs into two sets of sums: more VNNI chains in flight */
            int32_t word0, word1;
            memcpy(&word0, weights + 2 * p, sizeof word0);
            memcpy(&word1, weights + 2 * p + 2, sizeof word1);
            const __m512i w0 = _mm512_set1_epi32(word0), w1 = _mm512_set1_epi32(word1);
            const int8_t *v0 = values + p * 2 * head_dim, *v1 = v0 + 2 * head_dim;
            if (ahead != NULL)
                for (int64_t line = 0; line < 4 * head_dim; line += 64) _mm_prefetch(ahead + p * 2 * head_dim + line, _MM_HINT_T0);
            for (int j = 0; j < vectors; j++) {
                a[j] = _mm512_dpwssd_epi32(a[j], _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(v0 + 32 * j))), w0);
                b[j] = _mm512_dpwssd_epi32(b[j], _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(v1 + 32 * j))), w1);
            }
        }
        if (p < end) {
            int32_t word0;
            memcpy(&word0, weights + 2 * p, sizeof word0);
            const __m512i w0 = _mm512_set1_epi32(word0);
            const int8_t *v0 = values + p * 2 * head_dim;
            for (int j = 0; j < vectors; j++)
                a[j] = _mm512_dpwssd_epi32(a[j], _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(v0 + 32 * j))), w0);
        }
        for (int j = 0; j < vectors; j++)
            total[j] = _mm512_add_ps(total[j], _mm512_add_ps(_mm512_cvtepi32_ps(a[j]), _mm512_cvtepi32_ps(b[j])));
    }
    const __m512 scale = _mm512_set1_ps(unit);
    for (int j = 0; j < vectors; j++) _mm512_storeu_ps(out + 16 * j, _mm512_mul_ps(total[j], scale));
}

/* One (stream, head) over an int8 cache.  The hardware prefetcher barely starts on rows this short
 * (a few KB a head), so while the keys are scored this asks for the values, and while the values
 * are summed it asks for next_keys (the next head's, or NULL). */
AVX512_VNNI static inline void head_avx512_i8(const SplitQuery *q, const uint8_t *keys, const float *key_scales,
                                              const int8_t *values, const float *value_scales, int64_t width,
                                              int vectors, float scale, float *scores, int16_t *weights,
                                              const uint8_t *next_keys, float *out) {
    const int64_t head_dim = 16 * vectors;
    const int groups = (int)(head_dim / 4);
    int32_t hi_words[MAX_I8_HEAD_DIM / 4], lo_words[MAX_I8_HEAD_DIM / 4];
    memcpy(hi_words, q->hi, (size_t)head_dim);
    memcpy(lo_words, q->lo, (size_t)head_dim);
    const __m512i hi_bias = _mm512_set1_epi32(128 * q->sum_hi), lo_bias = _mm512_set1_epi32(128 * q->sum_lo);
    const __m512 hi_unit = _mm512_set1_ps(q->unit_hi * scale), lo_unit = _mm512_set1_ps(q->unit_lo * scale);
    /* Whole blocks, the last one partly past width: softmax_in_place sets those lanes to -inf. */
    for (int64_t block = 0; block < (width + 15) / 16; block++) {
        for (int64_t line = 0; line < 16 * head_dim; line += 64)
            _mm_prefetch((const char *)values + block * 16 * head_dim + line, _MM_HINT_T0);
        _mm_prefetch((const char *)(value_scales + 16 * block), _MM_HINT_T0);
        __m512 dots = block_scores_i8(keys + block * 16 * head_dim, hi_words, lo_words, groups, hi_bias, lo_bias,
                                      hi_unit, lo_unit);
        _mm512_storeu_ps(scores + 16 * block, _mm512_mul_ps(dots, _mm512_loadu_ps(key_scales + 16 * block)));
    }
    const float total = softmax_in_place(scores, width);
    const float unit = value_weights_avx512(scores, value_scales, width, weights) / total;
    pair_sums_i8(values, weights, width, vectors, unit, (const char *)next_keys, out);
}

AVX512_VNNI static void head_avx512_i8_32(const SplitQuery *q, const uint8_t *keys, const float *key_scales,
                                          const int8_t *values, const float *value_scales, int64_t width, float scale,
                                          float *scores, int16_t *weights, const uint8_t *next_keys, float *out) {
    head_avx512_i8(q, keys, key_scales, values, value_scales, width, 2, scale, scores, weights, next_keys, out);
}

AVX512_VNNI static void head_avx512_i8_any(const SplitQuery *q, const uint8_t *keys, const float *key_scales,
                                           const int8_t *values, const float *value_scales, int64_t width, int vectors,
                                           float scale, float *scores, int16_t *weights, const uint8_t *next_keys,
                                           float *out) {
    head_avx512_i8(q, keys, key_scales, values, value_scales, width, vectors, scale, scores, weights, next_keys, out);
}

static int cpu_has_vnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
}

/* head_dim 32 (GPT-SoVITS v2) with the vector count known at compile time, so loops unroll. */
AVX512 static void head_avx512_32(const float *q, const void *keys, const void *values, int bf16, int64_t width,
                                  float scale, float *scores, float *out) {
    head_avx512(q, keys, values, bf16, width, 2, scale, scores, out);
}

AVX512 static void head_avx512_bf16_32(const float *q, const void *keys, const void *values, int64_t width,
                                       float scale, float *scores, const void *next_keys, float *out) {
    head_avx512_bf16(q, (const uint16_t *)keys, (const uint16_t *)values, width, 1, scale, scores,
                     (const uint16_t *)next_keys, out);
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
static int cpu_has_vnni(void) { return 0; }
#endif

/* ---- the step --------------------------------------------------------------------------------- */

/* quantize_row and split_query, on the AVX-512 path when fast (n a multiple of 16): the same bytes
 * either way, so a prefill's rows and a step's are written alike. */
static void quantize_any(const float *x, int64_t n, int fast, int8_t *out, float *scale) {
#if HAVE_X86
    if (fast) {
        quantize_row_avx512(x, (int)(n / 16), out, scale);
        return;
    }
#endif
    (void)fast;
    quantize_row(x, n, out, scale);
}

static void split_any(const float *q, int64_t head_dim, int fast, SplitQuery *out) {
#if HAVE_X86
    if (fast) {
        split_query_avx512(q, (int)(head_dim / 16), out);
        return;
    }
#endif
    (void)fast;
    split_query(q, head_dim, out);
}

typedef struct {
    const float *qkv;
    void *cache;
    float *scales; /* the layer's int8 row scales, [2][slots][heads][max_len]; NULL for other caches */
    const int64_t *slot_ids, *positions;
    float *out;
    int64_t batch, heads, head_dim, slots, max_len;
    float scale;
    int type, bf16, fast;
} Step;

/* step_pair for an int8 cache: quantise the new key and value into their places, then attend. */
static void step_pair_i8(const Step *s, int64_t b, int64_t h, float *scores, int16_t *weights) {
    const int64_t hidden = s->heads * s->head_dim;
    const int64_t slot = s->slot_ids[b], position = s->positions[b];
    const size_t key_row0 = (size_t)(slot * s->heads + h) * (size_t)s->max_len;
    const size_t value_row0 = (size_t)((s->slots + slot) * s->heads + h) * (size_t)s->max_len;
    uint8_t *keys = (uint8_t *)s->cache + key_row0 * (size_t)s->head_dim;
    int8_t *values = (int8_t *)s->cache + value_row0 * (size_t)s->head_dim;
    float *key_scales = s->scales + key_row0, *value_scales = s->scales + value_row0;
    const float *row = s->qkv + b * 3 * hidden;
    const float *key = row + hidden + h * s->head_dim, *value = row + 2 * hidden + h * s->head_dim;
    const float *query = row + h * s->head_dim;
    float *out = s->out + b * hidden + h * s->head_dim;
    const int64_t width = position + 1;
    int8_t row8[MAX_I8_HEAD_DIM];
    quantize_any(key, s->head_dim, s->fast, row8, key_scales + position);
    place_key(row8, s->head_dim, keys, position);
    quantize_any(value, s->head_dim, s->fast, row8, value_scales + position);
    place_value(row8, s->head_dim, values, position);
    SplitQuery q;
    split_any(query, s->head_dim, s->fast, &q);
#if HAVE_X86
    if (s->fast) {
        const int vectors = (int)(s->head_dim / 16);
        /* the next head of the same stream (a thread's pairs run in order), for the prefetch */
        const uint8_t *next_keys = h + 1 < s->heads ? keys + (size_t)s->max_len * (size_t)s->head_dim : NULL;
        if (vectors == 2)
            head_avx512_i8_32(&q, keys, key_scales, values, value_scales, width, s->scale, scores, weights, next_keys,
                              out);
        else
            head_avx512_i8_any(&q, keys, key_scales, values, value_scales, width, vectors, s->scale, scores, weights,
                               next_keys, out);
        return;
    }
#endif
    head_portable_i8(&q, keys, key_scales, values, value_scales, width, s->head_dim, s->scale, scores, weights, out);
}

/* One (stream, head) of a step; scores has room for max_len rounded up to 16. */
static void step_pair(const Step *s, int64_t pair, float *scores, int16_t *weights) {
    const int64_t hidden = s->heads * s->head_dim;
    const size_t item = s->bf16 ? 2 : 4;
    const int64_t b = pair / s->heads, h = pair % s->heads;
    if (s->type == CACHE_I8) {
        step_pair_i8(s, b, h, scores, weights);
        return;
    }
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
    /* the next head of the same stream (a thread's pairs run in order), for the bf16 prefetch */
    const void *next_keys = h + 1 < s->heads ? keys + head_rows * item : NULL;
    if (s->fast && s->bf16 && s->head_dim == 32) {
        head_avx512_bf16_32(q, keys, values, width, s->scale, scores, next_keys, out);
        return;
    }
    if (s->fast && s->bf16 && s->head_dim % 32 == 0) {
        head_avx512_bf16(q, (const uint16_t *)keys, (const uint16_t *)values, width, (int)(s->head_dim / 32),
                         s->scale, scores, (const uint16_t *)next_keys, out);
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
        int16_t *weights = s->type == CACHE_I8 ? malloc((size_t)padded * sizeof(int16_t)) : NULL;
        const int ready = scores != NULL && (s->type != CACHE_I8 || weights != NULL);
        if (!ready) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t pair = 0; pair < pairs; pair++)
            if (ready) step_pair(s, pair, scores, weights);
        free(scores);
        free(weights);
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
/* One row i of a prefill head: its scores over the transposed keys, softmax, the weighted values. */
AVX512 static inline __attribute__((always_inline)) void prefix_row(const float *qkv, int64_t i, int64_t hidden,
                                                                    int64_t h, const int vectors, int64_t width,
                                                                    float scale, const float *keys_t,
                                                                    const float *values, float *scores, float *out) {
    const int64_t head_dim = 16 * vectors;
    const float *q = qkv + i * 3 * hidden + h * head_dim;
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

/* Rows i .. i + 3 of a prefill head, for head_dim 32: each key and value vector is loaded once for
 * the four rows (one row at a time loads one for each FMA).  Every row's sums are taken in
 * prefix_row's order, so the bits are its bits: a row narrower than the widest of the four gets
 * zero weights past its width, and the values' rows past the sequence are zeros, so the extra
 * products add nothing. */
AVX512 static void prefix_rows4_32(const float *qkv, int64_t i, int64_t hidden, int64_t h, const int64_t *widths,
                                   float scale, const float *keys_t, const float *values, float *scores,
                                   int64_t padded, float *out) {
    enum { HEAD_DIM = 32 };
    const float *q0 = qkv + i * 3 * hidden + h * HEAD_DIM, *q1 = q0 + 3 * hidden, *q2 = q1 + 3 * hidden,
                *q3 = q2 + 3 * hidden;
    int64_t most = 0;
    for (int r = 0; r < 4; r++) most = widths[i + r] > most ? widths[i + r] : most;
    const __m512 scaled = _mm512_set1_ps(scale);
    for (int64_t block = 0; block < (most + 15) / 16; block++) {
        const float *src = keys_t + block * HEAD_DIM * 16;
        __m512 sums[4][4];
        for (int r = 0; r < 4; r++)
            for (int k = 0; k < 4; k++) sums[r][k] = _mm512_setzero_ps();
        for (int d = 0; d < HEAD_DIM; d += 4)
            for (int k = 0; k < 4; k++) {
                const __m512 key = _mm512_loadu_ps(src + (d + k) * 16);
                sums[0][k] = _mm512_fmadd_ps(_mm512_set1_ps(q0[d + k]), key, sums[0][k]);
                sums[1][k] = _mm512_fmadd_ps(_mm512_set1_ps(q1[d + k]), key, sums[1][k]);
                sums[2][k] = _mm512_fmadd_ps(_mm512_set1_ps(q2[d + k]), key, sums[2][k]);
                sums[3][k] = _mm512_fmadd_ps(_mm512_set1_ps(q3[d + k]), key, sums[3][k]);
            }
        for (int r = 0; r < 4; r++) {
            const __m512 sum = _mm512_add_ps(_mm512_add_ps(sums[r][0], sums[r][1]), _mm512_add_ps(sums[r][2], sums[r][3]));
            _mm512_storeu_ps(scores + r * padded + block * 16, _mm512_mul_ps(sum, scaled));
        }
    }
    const int64_t pairs_end = (most + 1) & ~(int64_t)1;
    float total[4];
    for (int r = 0; r < 4; r++) {
        float *row = scores + r * padded;
        total[r] = softmax_in_place(row, widths[i + r]);
        for (int64_t w = widths[i + r]; w < pairs_end; w++) row[w] = 0.0f;
    }
    __m512 even[4][2], odd[4][2];
    for (int r = 0; r < 4; r++) even[r][0] = even[r][1] = odd[r][0] = odd[r][1] = _mm512_setzero_ps();
    for (int64_t w = 0; w < pairs_end; w += 2) {
        const float *v0 = values + w * HEAD_DIM, *v1 = v0 + HEAD_DIM;
        const __m512 a0 = _mm512_loadu_ps(v0), a1 = _mm512_loadu_ps(v0 + 16);
        const __m512 b0 = _mm512_loadu_ps(v1), b1 = _mm512_loadu_ps(v1 + 16);
        for (int r = 0; r < 4; r++) {
            const __m512 p0 = _mm512_set1_ps(scores[r * padded + w]), p1 = _mm512_set1_ps(scores[r * padded + w + 1]);
            even[r][0] = _mm512_fmadd_ps(p0, a0, even[r][0]);
            odd[r][0] = _mm512_fmadd_ps(p1, b0, odd[r][0]);
            even[r][1] = _mm512_fmadd_ps(p0, a1, even[r][1]);
            odd[r][1] = _mm512_fmadd_ps(p1, b1, odd[r][1]);
        }
    }
    for (int r = 0; r < 4; r++) {
        const __m512 inverse = _mm512_set1_ps(1.0f / total[r]);
        float *o = out + (i + r) * hidden + h * HEAD_DIM;
        _mm512_storeu_ps(o, _mm512_mul_ps(_mm512_add_ps(even[r][0], odd[r][0]), inverse));
        _mm512_storeu_ps(o + 16, _mm512_mul_ps(_mm512_add_ps(even[r][1], odd[r][1]), inverse));
    }
}

/* scores has room for 4 rows of padded (the sequence rounded up to 16) floats; values for padded
 * rows of head_dim. */
AVX512 static void prefix_head_avx512(const float *qkv, int64_t length, int64_t hidden, int64_t h, int vectors,
                                      const int64_t *widths, float scale, float *keys_t, float *values,
                                      float *scores, float *out) {
    const int64_t head_dim = 16 * vectors, stride = 3 * hidden;
    const int64_t blocks = (length + 15) / 16, padded = 16 * blocks;
    /* The head's values, packed: in qkv its rows are 3 * hidden floats apart, a page or more, and
     * every row of the prefill reads them all again.  Rows past the sequence are zeros. */
    for (int64_t w = 0; w < length; w++)
        memcpy(values + w * head_dim, qkv + w * stride + 2 * hidden + h * head_dim, (size_t)head_dim * sizeof(float));
    memset(values + length * head_dim, 0, (size_t)((padded - length) * head_dim) * sizeof(float));
    for (int64_t block = 0; block < blocks; block++) {
        float *dst = keys_t + block * head_dim * 16;
        for (int64_t j = 0; j < 16; j++) {
            const int64_t w = block * 16 + j;
            const float *key = qkv + w * stride + hidden + h * head_dim;
            for (int64_t d = 0; d < head_dim; d++) dst[d * 16 + j] = w < length ? key[d] : 0.0f;
        }
    }
    int64_t i = 0;
    if (vectors == 2)
        for (; i + 4 <= length; i += 4)
            prefix_rows4_32(qkv, i, hidden, h, widths, scale, keys_t, values, scores, padded, out);
    for (; i < length; i++) prefix_row(qkv, i, hidden, h, vectors, widths[i], scale, keys_t, values, scores, out);
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
        float *scores = malloc((size_t)(4 * padded) * sizeof(float)); /* 4 rows at a time on the fast path */
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

static int fast_path_usable(int64_t head_dim, int type) {
    return cpu_has_avx512() && head_dim % 16 == 0 && head_dim / 16 <= 16 && (type != CACHE_I8 || cpu_has_vnni());
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
    int64_t values[15];
    double scale;
    if (read_args(args, nargs, 15, 10, "decode_attention", values, &scale) != 0) return NULL;
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
    s.type = (int)values[11];
    s.bf16 = s.type == CACHE_BF16;
    int portable = values[12] != 0;
    int threads = (int)values[13];
    s.scales = (float *)(uintptr_t)values[14];
    if (s.batch < 0 || s.heads < 1 || s.head_dim < 1 || s.slots < 1 || s.max_len < 1 || threads < 1 ||
        (s.type != CACHE_F32 && s.type != CACHE_BF16 && s.type != CACHE_I8) || ((s.type == CACHE_I8) != (s.scales != NULL)) ||
        (s.type == CACHE_I8 && (s.head_dim % 4 || s.head_dim > MAX_I8_HEAD_DIM || s.max_len % 16))) {
        PyErr_SetString(PyExc_ValueError, "decode_attention: bad sizes, cache type, scales or thread count");
        return NULL;
    }
    s.fast = !portable && fast_path_usable(s.head_dim, s.type);
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = run_step(&s, threads);
    Py_END_ALLOW_THREADS
    if (status != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* ---- writing rows into an int8 cache (a prefill's) ------------------------------------------------ */

typedef struct {
    const float *rows;
    char *cache;
    float *scales;
    int64_t row_stride, count, kind, slot, start, heads, head_dim, slots, max_len;
    int fast;
} Store;

/* One head of a Store: keys one row at a time, values a pair of rows at a time where both are given. */
static void store_head(const Store *st, int64_t h) {
    const size_t row0 = (size_t)((st->kind * st->slots + st->slot) * st->heads + h) * (size_t)st->max_len;
    float *scales = st->scales + row0;
    char *base = st->cache + row0 * (size_t)st->head_dim;
    const float *rows = st->rows + h * st->head_dim;
    int8_t q[MAX_I8_HEAD_DIM], next[MAX_I8_HEAD_DIM];
    for (int64_t p = 0; p < st->count; p++) {
        const int64_t at = st->start + p;
        quantize_any(rows + p * st->row_stride, st->head_dim, st->fast, q, scales + at);
        if (st->kind == 0) {
            place_key(q, st->head_dim, (uint8_t *)base, at);
        } else if (at % 2 == 0 && p + 1 < st->count) {
            quantize_any(rows + (p + 1) * st->row_stride, st->head_dim, st->fast, next, scales + at + 1);
            place_value_pair(q, next, st->head_dim, (int8_t *)base, at);
            p++;
        } else {
            place_value(q, st->head_dim, (int8_t *)base, at);
        }
    }
}

/* store_rows(rows, row_stride, count, cache, scales, kind, slot, start, heads, head_dim, slots, max_len,
 * threads): quantise rows p = 0 .. count - 1 (each [heads][head_dim] float32, row_stride floats
 * apart) into positions start + p of one layer's int8 keys (kind 0) or values (kind 1) of slot,
 * the heads spread over threads. */
static PyObject *py_store_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "store_rows takes 13 arguments");
        return NULL;
    }
    int64_t v[13];
    for (Py_ssize_t i = 0; i < 13; i++) {
        v[i] = PyLong_AsLongLong(args[i]);
        if (v[i] == -1 && PyErr_Occurred()) return NULL;
    }
    Store st = {(const float *)(uintptr_t)v[0], (char *)(uintptr_t)v[3], (float *)(uintptr_t)v[4], v[1], v[2],
                v[5], v[6], v[7], v[8], v[9], v[10], v[11], 0};
    const int threads = (int)v[12];
    if (st.count < 0 || st.heads < 1 || st.head_dim < 1 || st.head_dim % 4 || st.head_dim > MAX_I8_HEAD_DIM ||
        st.max_len % 16 || (st.kind != 0 && st.kind != 1) || st.slot < 0 || st.slot >= st.slots || st.start < 0 ||
        st.start + st.count > st.max_len || st.row_stride < st.heads * st.head_dim || threads < 1) {
        PyErr_SetString(PyExc_ValueError, "store_rows: bad sizes, kind, slot, positions or thread count");
        return NULL;
    }
    st.fast = fast_path_usable(st.head_dim, CACHE_I8);
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
    for (int64_t h = 0; h < st.heads; h++) store_head(&st, h);
    Py_END_ALLOW_THREADS
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
    p.fast = !portable && fast_path_usable(p.head_dim, CACHE_F32);
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = run_prefill(&p, threads);
    Py_END_ALLOW_THREADS
    if (status != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_fast_path(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fast_path takes 2 arguments");
        return NULL;
    }
    int64_t head_dim = PyLong_AsLongLong(args[0]), type = PyLong_AsLongLong(args[1]);
    if ((head_dim == -1 || type == -1) && PyErr_Occurred()) return NULL;
    return PyBool_FromLong(fast_path_usable(head_dim, (int)type));
}

static PyMethodDef methods[] = {
    {"decode_attention", (PyCFunction)(void (*)(void))py_decode_attention, METH_FASTCALL,
     "decode_attention(qkv, cache, slot_ids, positions, out, batch, heads, head_dim, slots, max_len, scale,"
     " cache_type, portable, threads, scales): raw addresses and sizes (scales 0 unless the cache is int8);"
     " see streamvox.engine.ar.cpu_attention."},
    {"prefix_attention", (PyCFunction)(void (*)(void))py_prefix_attention, METH_FASTCALL,
     "prefix_attention(qkv, widths, out, length, heads, head_dim, scale, portable, threads): raw addresses and"
     " sizes; see streamvox.engine.ar.cpu_attention."},
    {"store_rows", (PyCFunction)(void (*)(void))py_store_rows, METH_FASTCALL,
     "store_rows(rows, row_stride, count, cache, scales, kind, slot, start, heads, head_dim, slots, max_len,"
     " threads): raw addresses and sizes; see streamvox.engine.ar.cpu_attention.CacheAttention.store."},
    {"fast_path", (PyCFunction)(void (*)(void))py_fast_path, METH_FASTCALL,
     "fast_path(head_dim, cache_type): whether the AVX-512 path runs for this head size and cache."},
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
