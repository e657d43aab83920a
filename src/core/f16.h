/* Scalar IEEE half and bfloat16 conversions (bit-exact, round-to-nearest-even,
 * NaN/inf preserved). SIMD code uses F16C; these are the reference. */
#ifndef KVS_CORE_F16_H
#define KVS_CORE_F16_H

#include <stdint.h>
#include <string.h>

static inline float kvs_f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t kvs_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float kvs_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        if (man == 0) return kvs_f32_from_bits(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31) return kvs_f32_from_bits(sign | 0x7f800000u | (man << 13));
    return kvs_f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

static inline uint16_t kvs_f32_to_f16(float f) {
    uint32_t x = kvs_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 | ((ax >> 13) & 0x3ff) : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to inf */
    if (ax < 0x38800000u) { /* subnormal or zero in half */
        if (ax < 0x33000000u) return (uint16_t)sign; /* < 2^-25 rounds to 0 */
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1); /* round to nearest even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

static inline float kvs_bf16_to_f32(uint16_t h) { return kvs_f32_from_bits((uint32_t)h << 16); }

static inline uint16_t kvs_f32_to_bf16(float f) {
    uint32_t x = kvs_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

#endif
