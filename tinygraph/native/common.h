/* What every kernel here shares: a vectorizable e^x, and a loop's range split among threads.
 *
 * Built with -O3 -march=native -fno-math-errno -fno-trapping-math (never -ffast-math: the
 * kernels handle inf and nan on purpose), so that gcc turns each element loop into vector
 * code; a call to libm's expf would stop that, hence exp_f32. Without -fopenmp (build.py
 * leaves it out where it cannot join torch's runtime) every kernel runs in one thread. */
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
#endif

/* e^x in float32 for x <= 0 (within 1 ulp on [-87.3, 0]): 2^n e^r with n = round(x / ln 2)
 * and |r| <= ln(2) / 2, e^r a degree-7 polynomial (Cephes' coefficients), 2^n put straight
 * into the exponent bits. Below -87.3 (where e^x leaves float's normal range) it returns 0;
 * a nan passes through. */
static inline float exp_f32(float x) {
    float xc = x > -87.3f ? x : -87.3f; /* a nan takes -87.3 here, and passes below */
    float n = __builtin_floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - n * 0.693359375f - n * -2.12194440e-4f; /* ln 2 in two parts: r exact */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { uint32_t i; float f; } two_n = { (uint32_t)((int32_t)n + 127) << 23 };
    return x >= -87.3f ? p * two_n.f : (x < -87.3f ? 0.0f : x);
}

/* The part [*begin, *end) of [0, n) that thread `t` of `threads` takes: equal blocks. */
static inline void share(int64_t n, int t, int threads, int64_t *begin, int64_t *end) {
    int64_t block = (n + threads - 1) / threads;
    *begin = t * block < n ? t * block : n;
    *end = *begin + block < n ? *begin + block : n;
}
