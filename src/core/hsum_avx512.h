/* Horizontal sums for the AVX-512 kernels (attn/attn_avx512.c). Include
 * only from files built with AVX-512 flags. */
#ifndef KVS_HSUM_AVX512_H
#define KVS_HSUM_AVX512_H

#include <immintrin.h>

/* The sums of the 16 lanes of a0..a3 (keys 0..3) folded to one vector whose
 * 128-bit lane L holds the 4 keys' sums over lanes [4L, 4L+4): pairs within
 * 128-bit lanes, the same adds for every key. */
static inline __m512 kvs_fold_keys512(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    const __m512 x01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    const __m512 x23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    const __m512d p01 = _mm512_castps_pd(x01), p23 = _mm512_castps_pd(x23);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(p01, p23)), _mm512_castpd_ps(_mm512_unpackhi_pd(p01, p23)));
}
/* 4 folded blocks -> the 16 keys' sums (block b's keys in lanes 4b..4b+3):
 * each key's 4 lanes added as (L0 + L2) + (L1 + L3) across a lane transpose. */
static inline __m512 kvs_fold_lanes512(__m512 y0, __m512 y1, __m512 y2, __m512 y3) {
    const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(y0, y1, 0x44), _mm512_shuffle_f32x4(y0, y1, 0xEE));
    const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(y2, y3, 0x44), _mm512_shuffle_f32x4(y2, y3, 0xEE));
    return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xDD));
}
#endif
