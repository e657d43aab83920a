/* AVX2+FMA implementations of the attention vector primitives (attn_simd.h).
 * exp uses a range reduction to 2^n * e^r, |r| <= ln2/2, with a degree-6
 * polynomial (relative error ~2e-7, checked against expf in test_attn). */
#include <immintrin.h>
#include <math.h>

#include "attn/attn_simd.h"

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static float dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_avx2(float *y, float a, const float *x, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static void scale_avx2(float *y, float a, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] *= a;
}

/* e^x for x <= 0 region used by softmax (valid for all finite x in [-87, 88];
 * inputs below -87 flush to 0, -inf gives 0). */
static inline __m256 exp256(__m256 x) {
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2hi = _mm256_set1_ps(0.693359375f), ln2lo = _mm256_set1_ps(-2.12194440e-4f);
    __m256 below = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, ln2hi, x);
    r = _mm256_fnmadd_ps(n, ln2lo, r);
    __m256 p = _mm256_set1_ps(1.3981999507e-3f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 r2 = _mm256_mul_ps(r, r);
    p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(below, y);
}

static float exp_sum_avx2(float *y, const float *x, float m, int64_t n) {
    __m256 vm = _mm256_set1_ps(m), acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(y + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float s = hsum256(acc);
    if (i < n) {
        float tx[8], ty[8];
        int64_t r = n - i;
        for (int64_t j = 0; j < 8; j++) tx[j] = j < r ? x[i + j] - m : -INFINITY;
        _mm256_storeu_ps(ty, exp256(_mm256_loadu_ps(tx)));
        for (int64_t j = 0; j < r; j++) { y[i + j] = ty[j]; s += ty[j]; }
    }
    return s;
}

/* Four dot products q.k0..k3 (n a multiple of 8) reduced together. */
static inline __m128 dot4(const float *q, const float *k0, const float *k1, const float *k2,
                          const float *k3, int n) {
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int d = 0; d < n; d += 8) {
        __m256 qv = _mm256_loadu_ps(q + d);
        c0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), c0);
        c1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), c1);
        c2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), c2);
        c3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), c3);
    }
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(c0, c1), _mm256_hadd_ps(c2, c3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

static void tile_avx2(const float *const *qrows, int R, const float *k, const float *v, const int *lo,
                      const int *hi, float scale, float *state, size_t state_stride, int dk, int dv,
                      float *scratch) {
    const __m128 vs = _mm_set1_ps(scale);
    for (int r = 0; r < R; r++) {
        const int a = lo[r], b = hi[r];
        if (a >= b) continue;
        const float *q = qrows[r];
        float *st = state + (size_t)r * state_stride;
        /* scores */
        int t = a;
        for (; t + 4 <= b; t += 4) {
            const float *kt = k + (size_t)t * dk;
            _mm_storeu_ps(scratch + (t - a), _mm_mul_ps(vs, dot4(q, kt, kt + dk, kt + 2 * dk, kt + 3 * dk, dk)));
        }
        for (; t < b; t++) scratch[t - a] = dot_avx2(q, k + (size_t)t * dk, dk) * scale;
        const int n = b - a;
        __m256 mv = _mm256_set1_ps(-INFINITY);
        int i = 0;
        for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(scratch + i));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float tmax = _mm_cvtss_f32(m4);
        for (; i < n; i++) if (scratch[i] > tmax) tmax = scratch[i];
        /* online softmax: rescale the running state when the max grows */
        float m_new = tmax > st[0] ? tmax : st[0];
        if (st[0] != -INFINITY && m_new > st[0]) {
            float corr = expf(st[0] - m_new);
            st[1] *= corr;
            scale_avx2(st + 2, corr, dv);
        }
        st[0] = m_new;
        st[1] += exp_sum_avx2(scratch, scratch, m_new, n);
        /* acc += p_t v_t, 64 output dims at a time in registers */
        float *acc = st + 2;
        int c = 0;
        for (; c + 64 <= dv; c += 64) {
            __m256 a0 = _mm256_loadu_ps(acc + c), a1 = _mm256_loadu_ps(acc + c + 8);
            __m256 a2 = _mm256_loadu_ps(acc + c + 16), a3 = _mm256_loadu_ps(acc + c + 24);
            __m256 a4 = _mm256_loadu_ps(acc + c + 32), a5 = _mm256_loadu_ps(acc + c + 40);
            __m256 a6 = _mm256_loadu_ps(acc + c + 48), a7 = _mm256_loadu_ps(acc + c + 56);
            for (int tt = a; tt < b; tt++) {
                const float *vr = v + (size_t)tt * dv + c;
                __m256 p = _mm256_broadcast_ss(scratch + (tt - a));
                a0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr), a0);
                a1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 8), a1);
                a2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 16), a2);
                a3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 24), a3);
                a4 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 32), a4);
                a5 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 40), a5);
                a6 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 48), a6);
                a7 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 56), a7);
            }
            _mm256_storeu_ps(acc + c, a0); _mm256_storeu_ps(acc + c + 8, a1);
            _mm256_storeu_ps(acc + c + 16, a2); _mm256_storeu_ps(acc + c + 24, a3);
            _mm256_storeu_ps(acc + c + 32, a4); _mm256_storeu_ps(acc + c + 40, a5);
            _mm256_storeu_ps(acc + c + 48, a6); _mm256_storeu_ps(acc + c + 56, a7);
        }
        for (; c < dv; c += 8) { /* dv % 64 remainder, 8 at a time */
            __m256 a0 = _mm256_loadu_ps(acc + c);
            for (int tt = a; tt < b; tt++)
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(scratch + (tt - a)), _mm256_loadu_ps(v + (size_t)tt * dv + c), a0);
            _mm256_storeu_ps(acc + c, a0);
        }
    }
}

static const kvs_attn_vec g_vec_avx2 = {dot_avx2, axpy_avx2, scale_avx2, exp_sum_avx2, tile_avx2};
const kvs_attn_vec *kvs_attn_vec_avx2(void) { return &g_vec_avx2; }
