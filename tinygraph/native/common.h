/* What every kernel here shares: a vectorizable e^x, and a loop's range split among threads.
 *
 * Built with -O3 -march=native -fno-math-errno -fno-trapping-math (never -ffast-math: the
 * kernels handle inf and nan on purpose), so that gcc turns each element loop into vector
 * code; a call to libm's expf would stop that, hence exp_f32. */
#include <stdint.h>
#include <omp.h>

/* e^x in float32 (within 2 ulp): 2^n * e^r with n = round(x / ln 2) and |r| <= ln(2) / 2,
 * e^r a degree-7 polynomial (Cephes' coefficients), 2^n put straight into the exponent
 * bits. Below -87 it returns 0 (2^n would leave float's normal range), above 88 it clamps
 * (a large finite number: callers only take 1 / (1 + e^x) of such). */
static inline float exp_f32(float x) {
    float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = __builtin_floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - n * 0.693359375f - n * -2.12194440e-4f; /* ln 2 in two parts: r exact */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } two_n = { ((int32_t)n + 127) << 23 };
    return x < -87.0f ? 0.0f : p * two_n.f;
}

/* The part [*begin, *end) of [0, n) that thread `t` of `threads` takes: equal blocks. */
static inline void share(int64_t n, int t, int threads, int64_t *begin, int64_t *end) {
    int64_t block = (n + threads - 1) / threads;
    *begin = t * block < n ? t * block : n;
    *end = *begin + block < n ? *begin + block : n;
}
