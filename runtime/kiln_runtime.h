/*
 * kiln_runtime.h: the runtime every kiln-generated model includes. Freestanding C99: no malloc,
 * no stdio, no state. Only static inline helpers and macros, so unused parts cost no flash.
 *
 * Math: by default the generated code calls libm (expf, logf, sqrtf, tanhf, erff, powf, floorf,
 * ceilf, rintf), which newlib and picolibc provide. Compile with -DKILN_NO_LIBM (kiln compile
 * --no-libm defines it in the generated header) to use the approximations below instead; their
 * maximum errors are documented next to each one.
 */
#ifndef KILN_RUNTIME_H
#define KILN_RUNTIME_H

#include <stdint.h>
#include <string.h>

/* Status codes returned by <prefix>_run. */
#define KILN_OK 0
#define KILN_ERR_NULL_ARGUMENT 1

#if defined(__GNUC__) || defined(__clang__)
#define KILN_ALIGNED(n) __attribute__((aligned(n)))
#define KILN_SECTION(s) __attribute__((section(s)))
/* Layer functions stay functions: inlining them all into PREFIX_run gains no speed and, in one
 * huge function, costs the register allocator (measured: +31% instructions on ResNet-8). */
#define KILN_NOINLINE __attribute__((noinline))
#define KILN_INFF (__builtin_inff())
#define KILN_NANF (__builtin_nanf(""))
#else
#define KILN_ALIGNED(n)
#define KILN_SECTION(s)
#define KILN_NOINLINE
#define KILN_INFF (1.0f / 0.0f)
#define KILN_NANF (0.0f / 0.0f)
#endif

/* NaN-propagating max/min, as numpy's maximum/minimum (and kiln's interpreter). */
static inline float kiln_max_f32(float a, float b) { return (a != a || b != b) ? a + b : (a > b ? a : b); }
static inline float kiln_min_f32(float a, float b) { return (a != a || b != b) ? a + b : (a < b ? a : b); }
static inline float kiln_abs_f32(float a) { return a < 0.0f ? -a : (a == 0.0f ? 0.0f : a); }

#define KILN_INT_HELPERS(T, S)                                                                   \
    static inline T kiln_max_##S(T a, T b) { return a > b ? a : b; }                             \
    static inline T kiln_min_##S(T a, T b) { return a < b ? a : b; }                             \
    /* Truncating division; division by zero gives 0 (kiln's defined behaviour). */             \
    static inline T kiln_div_##S(T a, T b) { return b == 0 ? (T)0 : (T)(a / b); }                \
    static inline T kiln_rem_##S(T a, T b) { return b == 0 ? (T)0 : (T)(a % b); }
KILN_INT_HELPERS(int8_t, i8)
KILN_INT_HELPERS(uint8_t, u8)
KILN_INT_HELPERS(int16_t, i16)
KILN_INT_HELPERS(int32_t, i32)
KILN_INT_HELPERS(int64_t, i64)
#undef KILN_INT_HELPERS

/* Wrapping absolute values (abs of the minimum wraps to itself, as in the interpreter). */
static inline int8_t kiln_abs_i8(int8_t a) { return a < 0 ? (int8_t)(0u - (uint8_t)a) : a; }
static inline uint8_t kiln_abs_u8(uint8_t a) { return a; }
static inline int16_t kiln_abs_i16(int16_t a) { return a < 0 ? (int16_t)(0u - (uint16_t)a) : a; }
static inline int32_t kiln_abs_i32(int32_t a) { return a < 0 ? (int32_t)(0u - (uint32_t)a) : a; }
static inline int64_t kiln_abs_i64(int64_t a) { return a < 0 ? (int64_t)(0u - (uint64_t)a) : a; }

/* Integer power by squaring, wrapping; negative exponents give the truncated real result. */
static inline int64_t kiln_pow_i64(int64_t base, int64_t e) {
    uint64_t result = 1u, b = (uint64_t)base;
    if (e < 0) {
        return base == 1 ? 1 : (base == -1 ? ((e & 1) ? -1 : 1) : 0);
    }
    while (e > 0) {
        if (e & 1) {
            result *= b;
        }
        b *= b;
        e >>= 1;
    }
    return (int64_t)result;
}

/* Right shifts of negative values are arithmetic on every compiler kiln supports (C99 leaves
 * them implementation-defined); kiln_requantize relies on it, so a compiler that differs fails
 * here rather than computing wrong results. */
typedef char kiln_arithmetic_shift_check[((-1 >> 1) == -1 && ((int64_t)-1 >> 1) == -1) ? 1 : -1];

/* Integer requantization: x * multiplier * 2^shift / 2^31, as TFLite's
 * MultiplyByQuantizedMultiplier computes it (gemmlowp's double rounding), bit for bit equal to
 * kiln_ir::fixed_point::multiply_by_quantized_multiplier for shifts in -31..31:
 * 1. a positive shift multiplies x by 2^shift (wrapping; kiln's accumulator bound keeps it in
 *    range);
 * 2. SaturatingRoundingDoublingHighMul: floor((a * multiplier + 2^30) / 2^31), which equals
 *    gemmlowp's nudge-then-truncate for either sign of the product; the one overflowing case
 *    (both operands INT32_MIN) saturates to INT32_MAX;
 * 3. RoundingDivideByPOT: a right shift by -shift, rounding half away from zero.
 * Integer only (one 32x32->64 multiply): no float, no division. */
static inline int32_t kiln_requantize(int32_t x, int32_t multiplier, int32_t shift) {
    int32_t s = shift < -31 ? -31 : (shift > 31 ? 31 : shift);
    int32_t left = s > 0 ? s : 0, right = s < 0 ? -s : 0;
    int32_t a = (int32_t)((uint32_t)x << left);
    int32_t high, mask, remainder, threshold;
    if (a == INT32_MIN && multiplier == INT32_MIN) {
        high = INT32_MAX;
    } else {
        high = (int32_t)(((int64_t)a * multiplier + ((int64_t)1 << 30)) >> 31);
    }
    mask = (int32_t)(((uint32_t)1 << right) - 1u);
    remainder = high & mask;
    threshold = (mask >> 1) + (high < 0);
    return (high >> right) + (remainder > threshold);
}

/* Integer requantization rounded once: x * multiplier * 2^shift / 2^31, halves to even, equal
 * bit for bit to kiln_ir::fixed_point::multiply_half_even (shifts clamped to -31..31, so the
 * 64-bit product is shifted right by 0 to 62 bits), saturated to int32. This is what
 * onnxruntime's and LiteRT's (XNNPACK's) float requantization computes, to the precision of
 * their f32 scales. Integer only: one 32x32->64 multiply, no float, no division. */
static inline int32_t kiln_requantize_half_even(int32_t x, int32_t multiplier, int32_t shift) {
    int32_t s = shift < -31 ? -31 : (shift > 31 ? 31 : shift);
    int32_t r = 31 - s;
    int64_t p = (int64_t)x * multiplier;
    int64_t q = p;
    if (r > 0) {
        uint64_t rem = (uint64_t)p & ((((uint64_t)1) << r) - 1u);
        uint64_t half = ((uint64_t)1) << (r - 1);
        q = p >> r;
        q += (rem > half) || (rem == half && (q & 1));
    }
    return q < INT32_MIN ? INT32_MIN : (q > INT32_MAX ? INT32_MAX : (int32_t)q);
}

/* The high word of the 64-bit product x * m (floor of x * m / 2^32): one SMULL/SMMUL on Arm,
 * one MULH on RV32M. The int8 kernels requantize with it where kiln proved at compile time
 * that the result equals kiln_requantize_half_even's (no tie can occur). */
static inline int32_t kiln_mulhi(int32_t x, int32_t m) {
    return (int32_t)(((int64_t)x * m) >> 32);
}

/* Unaligned little-endian loads for the int8 kernels (one LDR/LDRH where the core allows
 * unaligned access; byte loads elsewhere). */
static inline uint32_t kiln_load_u16(const void *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline int32_t kiln_load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Saturation to the int8 and uint8 ranges (one SSAT/USAT where the core has them). */
#if defined(__ARM_FEATURE_SAT) && (defined(__GNUC__) || defined(__clang__))
#include <arm_acle.h>
static inline int32_t kiln_ssat8(int32_t x) { return __ssat(x, 8); }
static inline int32_t kiln_usat8(int32_t x) { return (int32_t)__usat(x, 8); }
#else
/* In range is the common case: one unsigned comparison decides it. */
static inline int32_t kiln_ssat8(int32_t x) { return (uint32_t)x + 128u <= 255u ? x : (x < 0 ? -128 : 127); }
static inline int32_t kiln_usat8(int32_t x) { return (uint32_t)x <= 255u ? x : (x < 0 ? 0 : 255); }
#endif

/* The Armv7E-M DSP operations the int8 kernels use. Where the core has them
 * (__ARM_FEATURE_DSP: Cortex-M4, M7, M33, M55) each is one instruction (ACLE intrinsics, or
 * one instruction of inline assembly for the forms ACLE lacks); elsewhere the same arithmetic
 * in portable C, so code written for the DSP runs (slowly) on any host and is tested there.
 * Halfword lanes: bits 0-15 are lane 0, bits 16-31 lane 1.
 *   kiln_sxtb16(x):       lanes = sign-extended bytes 0 and 2 of x
 *   kiln_sxtb16_ror8(x):  lanes = sign-extended bytes 1 and 3 of x
 *   kiln_uxtb16(x), kiln_uxtb16_ror8(x): the same, zero-extended
 *   kiln_pkhbt(lo, hi):   lane 0 of lo, lane 0 of hi
 *   kiln_pkhbt_hi(lo, hi): lane 0 of lo, lane 1 of hi
 *   kiln_smlad(a, b, acc): acc + a.lane0 * b.lane0 + a.lane1 * b.lane1 (wrapping)
 *   kiln_smladx(a, b, acc): acc + a.lane0 * b.lane1 + a.lane1 * b.lane0
 *   kiln_smlabb(a, b, acc), kiln_smlatb(a, b, acc): acc + a.lane0 (lane1) * b.lane0 */
#if defined(__ARM_FEATURE_DSP) && (defined(__GNUC__) || defined(__clang__))
#include <arm_acle.h>
#define KILN_DSP 1
static inline int32_t kiln_sxtb16(int32_t x) { return (int32_t)__sxtb16(x); }
static inline int32_t kiln_uxtb16(int32_t x) { return (int32_t)__uxtb16(x); }
static inline int32_t kiln_sxtb16_ror8(int32_t x) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline int32_t kiln_uxtb16_ror8(int32_t x) {
    int32_t r;
    __asm__("uxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline int32_t kiln_pkhbt(int32_t lo, int32_t hi) {
    int32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(lo), "r"(hi));
    return r;
}
static inline int32_t kiln_smlad(int32_t a, int32_t b, int32_t acc) { return __smlad(a, b, acc); }
static inline int32_t kiln_smladx(int32_t a, int32_t b, int32_t acc) { return __smladx(a, b, acc); }
static inline int32_t kiln_smlabb(int32_t a, int32_t b, int32_t acc) { return __smlabb(a, b, acc); }
static inline int32_t kiln_smlatb(int32_t a, int32_t b, int32_t acc) { return __smlatb(a, b, acc); }
static inline int32_t kiln_pkhbt_hi(int32_t lo, int32_t hi) {
    int32_t r;
    __asm__("pkhbt %0, %1, %2" : "=r"(r) : "r"(lo), "r"(hi));
    return r;
}
#else
#define KILN_DSP 0
static inline int32_t kiln_lane16(uint32_t half) { return (int32_t)((half & 0xffffu) ^ 0x8000u) - 0x8000; }
static inline uint32_t kiln_sext8(uint32_t byte) { return (uint32_t)((int32_t)((byte & 0xffu) ^ 0x80u) - 0x80) & 0xffffu; }
static inline int32_t kiln_sxtb16(int32_t x) {
    uint32_t u = (uint32_t)x;
    return (int32_t)(kiln_sext8(u) | (kiln_sext8(u >> 16) << 16));
}
static inline int32_t kiln_sxtb16_ror8(int32_t x) { return kiln_sxtb16((int32_t)((uint32_t)x >> 8)); }
static inline int32_t kiln_uxtb16(int32_t x) { return (int32_t)((uint32_t)x & 0x00ff00ffu); }
static inline int32_t kiln_uxtb16_ror8(int32_t x) { return (int32_t)(((uint32_t)x >> 8) & 0x00ff00ffu); }
static inline int32_t kiln_pkhbt(int32_t lo, int32_t hi) {
    return (int32_t)(((uint32_t)lo & 0xffffu) | ((uint32_t)hi << 16));
}
static inline int32_t kiln_smlad(int32_t a, int32_t b, int32_t acc) {
    uint32_t ua = (uint32_t)a, ub = (uint32_t)b;
    int32_t lo = kiln_lane16(ua) * kiln_lane16(ub), hi = kiln_lane16(ua >> 16) * kiln_lane16(ub >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)lo + (uint32_t)hi);
}
static inline int32_t kiln_smladx(int32_t a, int32_t b, int32_t acc) {
    uint32_t ub = (uint32_t)b;
    return kiln_smlad(a, (int32_t)((ub >> 16) | (ub << 16)), acc);
}
static inline int32_t kiln_smlabb(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)(kiln_lane16((uint32_t)a) * kiln_lane16((uint32_t)b)));
}
static inline int32_t kiln_smlatb(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)(kiln_lane16((uint32_t)a >> 16) * kiln_lane16((uint32_t)b)));
}
static inline int32_t kiln_pkhbt_hi(int32_t lo, int32_t hi) {
    return (int32_t)(((uint32_t)lo & 0xffffu) | ((uint32_t)hi & 0xffff0000u));
}
#endif

/* No instruction: GCC's pre-allocation scheduler may not move loads across it. Register-
 * blocked int8 kernels place it between the steps of an unrolled loop, whose loads the
 * scheduler would otherwise hoist all together and spill (a memory clobber: the blocks'
 * accumulators are registers and stay put). */
#if defined(__GNUC__) || defined(__clang__)
#define kiln_sched_barrier() __asm__ __volatile__("" ::: "memory")
#else
#define kiln_sched_barrier() ((void)0)
#endif

/* The Armv8.1-M Helium (MVE) operations the int8 kernels use: 128-bit vectors of 16 int8 or
 * 4 int32 lanes. Where the core has them (__ARM_FEATURE_MVE, Cortex-M55 with -mcpu=cortex-m55)
 * each is one or two MVE instructions (arm_mve.h intrinsics); elsewhere the same arithmetic
 * in portable C, so kernels written for Helium run on any host and are tested there.
 *   kiln_vld8(p), kiln_vld8_n(p, n): 16 int8 lanes (lanes n.. zero: a VCTP-predicated load)
 *   kiln_vdot8(acc, a, b):     acc + sum of a[i] * b[i] over 16 lanes (VMLADAVA.S8, wrapping)
 *   kiln_vld8x4(p):            4 int8 widened to int32 lanes (VLDRB.S32)
 *   kiln_vld8x4_s2(p):         p[0], p[2], p[4], p[6] widened (gather VLDRB.S32)
 *   kiln_vdup(x):              (x, x, x, x)
 *   kiln_vldu32(p):            4 uint32 lanes (VLDRW.U32)
 *   kiln_vgather8x4(p, o):     p[o[0]], .., p[o[3]] widened (gather VLDRB.S32)
 *   kiln_vmla_n(acc, v, s):    acc + v * s lane by lane (VMLA)
 *   kiln_vspread8(d, ds, s, n): d[i * ds] = s[i] for i < n (VLDRB.S16 + scatter VSTRB.16)
 *   kiln_vfill8(d, ds, v, n):  d[i * ds] = v for i < n
 *   kiln_vgather8(d, s, ss, n): d[i] = s[i * ss] for i < n (gather VLDRB.S16 + VSTRB.16)
 *   kiln_v4(a, b, c, d):       the int32 vector (a, b, c, d)
 *   kiln_vmulhi_n(v, m):       (v * m) >> 32 (VMULH);  kiln_vrmulhi_n: + 2^31 first (VRMULH)
 *   kiln_vqrdmulh_n(v, m):     (2 v m + 2^31) >> 32, saturated (VQRDMULH)
 *   kiln_vrshr(v, s):          (v + 2^(s-1)) >> s for s in 1..31, exact (VRSHL by -s)
 *   kiln_vdecneg(v):           v - 1 where v < 0
 *   kiln_vclamp_add(v, z, lo, hi): min(max(v, lo), hi) + z
 *   kiln_vst8x4(p, v, n):      the low bytes of lanes 0..n-1 to p[0..n-1] (VSTRB.32)
 *   kiln_vlut32(t, p, n):      t[p[i]] for bytes p[0..n-1] (n <= 4; lanes n.. read t[0]):
 *                              VLDRB.U32 + gather VLDRW.32 with shifted offsets
 *   kiln_vadd(a, b):           a + b lane by lane (VADD.I32)
 *   kiln_vbarrier():           no instruction; keeps GCC's pre-allocation scheduler from
 *                              hoisting the loads of later chunks, which spills Q registers */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1) && (defined(__GNUC__) || defined(__clang__))
#include <arm_mve.h>
#define KILN_MVE 1
#define kiln_vbarrier() __asm__ __volatile__("" ::: "memory")
typedef int8x16_t kiln_i8x16;
typedef int32x4_t kiln_i32x4;
static inline kiln_i8x16 kiln_vld8(const int8_t *p) { return vldrbq_s8(p); }
static inline kiln_i8x16 kiln_vld8_n(const int8_t *p, int32_t n) { return vldrbq_z_s8(p, vctp8q((uint32_t)n)); }
static inline int32_t kiln_vdot8(int32_t acc, kiln_i8x16 a, kiln_i8x16 b) { return vmladavaq_s8(acc, a, b); }
static inline kiln_i32x4 kiln_vld8x4(const int8_t *p) { return vldrbq_s32(p); }
static inline kiln_i32x4 kiln_vld8x4_s2(const int8_t *p) { return vldrbq_gather_offset_s32(p, vidupq_n_u32(0, 2)); }
static inline kiln_i32x4 kiln_vdup(int32_t x) { return vdupq_n_s32(x); }
typedef uint32x4_t kiln_u32x4;
static inline kiln_u32x4 kiln_vldu32(const uint32_t *p) { return vldrwq_u32(p); }
static inline kiln_i32x4 kiln_vgather8x4(const int8_t *p, kiln_u32x4 o) { return vldrbq_gather_offset_s32(p, o); }
static inline kiln_i32x4 kiln_vmla_n(kiln_i32x4 acc, kiln_i32x4 v, int32_t s) { return vmlaq_n_s32(acc, v, s); }
static inline void kiln_vspread8(int8_t *d, int32_t ds, const int8_t *s, int32_t n) {
    const uint16x8_t off = vmulq_n_u16(vidupq_n_u16(0, 1), (uint16_t)ds);
    for (int32_t i = 0; i < n; i += 8) {
        const mve_pred16_t p = vctp16q((uint32_t)(n - i));
        vstrbq_scatter_offset_p_s16(d + i * ds, off, vldrbq_z_s16(s + i, p), p);
    }
}
static inline void kiln_vfill8(int8_t *d, int32_t ds, int8_t v, int32_t n) {
    const uint16x8_t off = vmulq_n_u16(vidupq_n_u16(0, 1), (uint16_t)ds);
    const int16x8_t x = vdupq_n_s16(v);
    for (int32_t i = 0; i < n; i += 8) {
        vstrbq_scatter_offset_p_s16(d + i * ds, off, x, vctp16q((uint32_t)(n - i)));
    }
}
static inline void kiln_vgather8(int8_t *d, const int8_t *s, int32_t ss, int32_t n) {
    const uint16x8_t off = vmulq_n_u16(vidupq_n_u16(0, 1), (uint16_t)ss);
    for (int32_t i = 0; i < n; i += 8) {
        const mve_pred16_t p = vctp16q((uint32_t)(n - i));
        vstrbq_p_s16(d + i, vldrbq_gather_offset_z_s16(s + i * ss, off, p), p);
    }
}
static inline kiln_i32x4 kiln_v4(int32_t a, int32_t b, int32_t c, int32_t d) {
    kiln_i32x4 v = vdupq_n_s32(a);
    v = vsetq_lane_s32(b, v, 1);
    v = vsetq_lane_s32(c, v, 2);
    return vsetq_lane_s32(d, v, 3);
}
static inline kiln_i32x4 kiln_vmulhi_n(kiln_i32x4 v, int32_t m) { return vmulhq_s32(v, vdupq_n_s32(m)); }
static inline kiln_i32x4 kiln_vrmulhi_n(kiln_i32x4 v, int32_t m) { return vrmulhq_s32(v, vdupq_n_s32(m)); }
static inline kiln_i32x4 kiln_vqrdmulh_n(kiln_i32x4 v, int32_t m) { return vqrdmulhq_n_s32(v, m); }
static inline kiln_i32x4 kiln_vrshr(kiln_i32x4 v, int32_t s) { return vrshlq_n_s32(v, -s); }
static inline kiln_i32x4 kiln_vdecneg(kiln_i32x4 v) { return vaddq_s32(v, vshrq_n_s32(v, 31)); }
static inline kiln_i32x4 kiln_vclamp_add(kiln_i32x4 v, int32_t z, int32_t lo, int32_t hi) {
    return vaddq_n_s32(vminq_s32(vmaxq_s32(v, vdupq_n_s32(lo)), vdupq_n_s32(hi)), z);
}
static inline kiln_i32x4 kiln_vlut32(const int32_t *t, const uint8_t *p, int32_t n) {
    if (n >= 4) {
        return vldrwq_gather_shifted_offset_s32(t, vldrbq_u32(p));
    }
    return vldrwq_gather_shifted_offset_s32(t, vldrbq_z_u32(p, vctp32q((uint32_t)n)));
}
static inline kiln_i32x4 kiln_vadd(kiln_i32x4 a, kiln_i32x4 b) { return vaddq_s32(a, b); }
static inline void kiln_vst8x4(void *p, kiln_i32x4 v, int32_t n) {
    if (n >= 4) {
        vstrbq_s32((int8_t *)p, v);
    } else {
        vstrbq_p_s32((int8_t *)p, v, vctp32q((uint32_t)n));
    }
}
#else
#define kiln_vbarrier() ((void)0)
typedef struct {
    int8_t v[16];
} kiln_i8x16;
typedef struct {
    int32_t v[4];
} kiln_i32x4;
static inline kiln_i8x16 kiln_vld8_n(const int8_t *p, int32_t n) {
    kiln_i8x16 r;
    for (int32_t i = 0; i < 16; ++i) {
        r.v[i] = i < n ? p[i] : 0;
    }
    return r;
}
static inline kiln_i8x16 kiln_vld8(const int8_t *p) { return kiln_vld8_n(p, 16); }
static inline int32_t kiln_vdot8(int32_t acc, kiln_i8x16 a, kiln_i8x16 b) {
    uint32_t s = (uint32_t)acc;
    for (int32_t i = 0; i < 16; ++i) {
        s += (uint32_t)(a.v[i] * b.v[i]);
    }
    return (int32_t)s;
}
static inline kiln_i32x4 kiln_vld8x4(const int8_t *p) {
    kiln_i32x4 r;
    for (int32_t i = 0; i < 4; ++i) {
        r.v[i] = p[i];
    }
    return r;
}
static inline kiln_i32x4 kiln_vld8x4_s2(const int8_t *p) {
    kiln_i32x4 r;
    for (int32_t i = 0; i < 4; ++i) {
        r.v[i] = p[2 * i];
    }
    return r;
}
static inline kiln_i32x4 kiln_vdup(int32_t x) {
    kiln_i32x4 r;
    for (int32_t i = 0; i < 4; ++i) {
        r.v[i] = x;
    }
    return r;
}
typedef struct {
    uint32_t v[4];
} kiln_u32x4;
static inline kiln_u32x4 kiln_vldu32(const uint32_t *p) {
    kiln_u32x4 r;
    for (int32_t i = 0; i < 4; ++i) {
        r.v[i] = p[i];
    }
    return r;
}
static inline kiln_i32x4 kiln_vgather8x4(const int8_t *p, kiln_u32x4 o) {
    kiln_i32x4 r;
    for (int32_t i = 0; i < 4; ++i) {
        r.v[i] = p[o.v[i]];
    }
    return r;
}
static inline kiln_i32x4 kiln_vmla_n(kiln_i32x4 acc, kiln_i32x4 v, int32_t s) {
    for (int32_t i = 0; i < 4; ++i) {
        acc.v[i] = (int32_t)((uint32_t)acc.v[i] + (uint32_t)v.v[i] * (uint32_t)s);
    }
    return acc;
}
static inline void kiln_vspread8(int8_t *d, int32_t ds, const int8_t *s, int32_t n) {
    for (int32_t i = 0; i < n; ++i) {
        d[i * ds] = s[i];
    }
}
static inline void kiln_vfill8(int8_t *d, int32_t ds, int8_t v, int32_t n) {
    for (int32_t i = 0; i < n; ++i) {
        d[i * ds] = v;
    }
}
static inline void kiln_vgather8(int8_t *d, const int8_t *s, int32_t ss, int32_t n) {
    for (int32_t i = 0; i < n; ++i) {
        d[i] = s[i * ss];
    }
}
static inline kiln_i32x4 kiln_v4(int32_t a, int32_t b, int32_t c, int32_t d) {
    kiln_i32x4 r;
    r.v[0] = a;
    r.v[1] = b;
    r.v[2] = c;
    r.v[3] = d;
    return r;
}
static inline kiln_i32x4 kiln_vmulhi_n(kiln_i32x4 v, int32_t m) {
    for (int32_t i = 0; i < 4; ++i) {
        v.v[i] = (int32_t)(((int64_t)v.v[i] * m) >> 32);
    }
    return v;
}
static inline kiln_i32x4 kiln_vrmulhi_n(kiln_i32x4 v, int32_t m) {
    for (int32_t i = 0; i < 4; ++i) {
        v.v[i] = (int32_t)(((int64_t)v.v[i] * m + INT64_C(0x80000000)) >> 32);
    }
    return v;
}
static inline kiln_i32x4 kiln_vqrdmulh_n(kiln_i32x4 v, int32_t m) {
    for (int32_t i = 0; i < 4; ++i) {
        v.v[i] = v.v[i] == INT32_MIN && m == INT32_MIN
                     ? INT32_MAX
                     : (int32_t)(((int64_t)v.v[i] * m + (INT64_C(1) << 30)) >> 31);
    }
    return v;
}
static inline kiln_i32x4 kiln_vrshr(kiln_i32x4 v, int32_t s) {
    for (int32_t i = 0; i < 4; ++i) {
        v.v[i] = (int32_t)(((int64_t)v.v[i] + (INT64_C(1) << (s - 1))) >> s);
    }
    return v;
}
static inline kiln_i32x4 kiln_vdecneg(kiln_i32x4 v) {
    for (int32_t i = 0; i < 4; ++i) {
        v.v[i] -= v.v[i] < 0;
    }
    return v;
}
static inline kiln_i32x4 kiln_vclamp_add(kiln_i32x4 v, int32_t z, int32_t lo, int32_t hi) {
    for (int32_t i = 0; i < 4; ++i) {
        const int32_t x = v.v[i];
        v.v[i] = (x < lo ? lo : (x > hi ? hi : x)) + z;
    }
    return v;
}
static inline kiln_i32x4 kiln_vlut32(const int32_t *t, const uint8_t *p, int32_t n) {
    kiln_i32x4 r;
    for (int32_t i = 0; i < 4; ++i) {
        r.v[i] = t[i < n ? p[i] : 0];
    }
    return r;
}
static inline kiln_i32x4 kiln_vadd(kiln_i32x4 a, kiln_i32x4 b) {
    for (int32_t i = 0; i < 4; ++i) {
        a.v[i] = (int32_t)((uint32_t)a.v[i] + (uint32_t)b.v[i]);
    }
    return a;
}
static inline void kiln_vst8x4(void *p, kiln_i32x4 v, int32_t n) {
    for (int32_t i = 0; i < n && i < 4; ++i) {
        ((uint8_t *)p)[i] = (uint8_t)v.v[i];
    }
}
#endif

#ifndef KILN_NO_LIBM
#include <math.h>
#define KILN_EXPF(x) expf(x)
#define KILN_LOGF(x) logf(x)
#define KILN_SQRTF(x) sqrtf(x)
#define KILN_TANHF(x) tanhf(x)
#define KILN_ERFF(x) erff(x)
#define KILN_POWF(x, y) powf(x, y)
#define KILN_FLOORF(x) floorf(x)
#define KILN_CEILF(x) ceilf(x)
#define KILN_RINTF(x) rintf(x)
#else
/* Approximations for builds without libm. The maximum errors below are measured against
 * double-precision libm by tests/c/no_libm_accuracy.c (run by the test suite). */

/* floor/ceil/rint: exact for |x| < 2^23 (larger floats are already integers). */
static inline float kiln_floorf(float x) {
    if (!(x > -8388608.0f && x < 8388608.0f)) return x;
    { float t = (float)(int32_t)x; return t > x ? t - 1.0f : t; }
}
static inline float kiln_ceilf(float x) {
    if (!(x > -8388608.0f && x < 8388608.0f)) return x;
    { float t = (float)(int32_t)x; return t < x ? t + 1.0f : t; }
}
static inline float kiln_rintf(float x) {
    if (!(x > -8388608.0f && x < 8388608.0f)) return x;
    {
        float f = kiln_floorf(x), d = x - f;
        if (d > 0.5f || (d == 0.5f && ((int32_t)f & 1))) f += 1.0f;
        return f;
    }
}
/* expf: range reduction by ln2 and a degree-6 polynomial; max relative error 3e-7. */
static inline float kiln_expf(float x) {
    if (x != x) return x;
    if (x > 88.72f) return KILN_INFF;
    if (x < -103.9f) return 0.0f;
    {
        float k = kiln_rintf(x * 1.44269504f);
        float r = (x - k * 0.693359375f) + k * 2.12194440e-4f;
        float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666672e-1f + r * (4.16666344e-2f + r * (8.33336819e-3f + r * 1.38925619e-3f)))));
        int32_t e = (int32_t)k;
        union { float f; uint32_t u; } s;
        if (e < -126) { p *= 1.17549435e-38f; e += 126; }
        s.u = (uint32_t)(e + 127) << 23;
        return p * s.f;
    }
}
/* logf: mantissa/exponent split and an atanh series; max error 3e-7 (absolute below 1, relative above). */
static inline float kiln_logf(float x) {
    if (x != x || x < 0.0f) return KILN_NANF;
    if (x == 0.0f) return -KILN_INFF;
    if (x == KILN_INFF) return x;
    {
        union { float f; uint32_t u; } v;
        int32_t e;
        float m, s, s2;
        v.f = x;
        if (v.u < 0x00800000u) { v.f *= 8388608.0f; e = -23; } else { e = 0; }
        e += (int32_t)(v.u >> 23) - 127;
        v.u = (v.u & 0x007fffffu) | 0x3f800000u;
        m = v.f;
        if (m > 1.41421356f) { m *= 0.5f; e += 1; }
        s = (m - 1.0f) / (m + 1.0f);
        s2 = s * s;
        return 2.0f * s * (1.0f + s2 * (0.333333333f + s2 * (0.2f + s2 * (0.142857143f + s2 * 0.111111111f)))) + (float)e * 0.693147181f;
    }
}
/* sqrtf: Newton iterations from a bit-level estimate; max relative error 1.2e-7. */
static inline float kiln_sqrtf(float x) {
    if (!(x > 0.0f) || x == KILN_INFF) return x == 0.0f || x == KILN_INFF ? x : KILN_NANF;
    {
        union { float f; uint32_t u; } v;
        float y;
        v.f = x;
        v.u = (v.u >> 1) + 0x1fc00000u;
        y = v.f;
        y = 0.5f * (y + x / y);
        y = 0.5f * (y + x / y);
        y = 0.5f * (y + x / y);
        return y;
    }
}
/* tanhf via expf; max absolute error 3e-7. */
static inline float kiln_tanhf(float x) {
    if (x > 9.0f) return 1.0f;
    if (x < -9.0f) return -1.0f;
    if (x > -0.0005f && x < 0.0005f) return x;
    { float e = kiln_expf(2.0f * x); return (e - 1.0f) / (e + 1.0f); }
}
/* erff: Abramowitz-Stegun 7.1.26; max absolute error 6e-7. */
static inline float kiln_erff(float x) {
    float s = x < 0.0f ? -1.0f : 1.0f, a = x < 0.0f ? -x : x;
    if (a > 4.0f) return s;
    {
        float t = 1.0f / (1.0f + 0.3275911f * a);
        float y = 1.0f - t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f)))) * kiln_expf(-a * a);
        return s * y;
    }
}
/* powf = exp(y log x), with integer exponents of negative bases handled; max relative error 2e-6
 * (bases 0.01 to 10, exponents -4 to 4). */
static inline float kiln_powf(float x, float y) {
    if (y == 0.0f) return 1.0f;
    if (x < 0.0f) {
        if (kiln_floorf(y) != y) return KILN_NANF;
        { float r = kiln_expf(y * kiln_logf(-x)); return ((int64_t)y & 1) ? -r : r; }
    }
    return kiln_expf(y * kiln_logf(x));
}
#define KILN_EXPF(x) kiln_expf(x)
#define KILN_LOGF(x) kiln_logf(x)
#define KILN_SQRTF(x) kiln_sqrtf(x)
#define KILN_TANHF(x) kiln_tanhf(x)
#define KILN_ERFF(x) kiln_erff(x)
#define KILN_POWF(x, y) kiln_powf(x, y)
#define KILN_FLOORF(x) kiln_floorf(x)
#define KILN_CEILF(x) kiln_ceilf(x)
#define KILN_RINTF(x) kiln_rintf(x)
#endif

#endif /* KILN_RUNTIME_H */
