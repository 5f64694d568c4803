/* GELU's backward, g * gelu'(x), in one pass.
 *
 *   exact   gelu(x) = x Phi(x)               gelu'(x) = Phi(x) + x phi(x)
 *   tanh    gelu(x) = x (1 + t) / 2          gelu'(x) = (1 + t) / 2 + x (1 - t)(1 + t) u'(x) / 2
 *           t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3)
 *
 * The exact form takes Phi from the forward's output, Phi = gelu(x) / x (no erf), with
 * phi(x) = e^(-x^2/2) / sqrt(2 pi); at x = 0, or so near it that 1/x overflows, the quotient
 * is not finite and its limit there, Phi(0) = 1/2, is taken. The tanh form gets
 * 1 - t and 1 + t from e = e^(-2|u|) as 2e / (1 + e) and 2 / (1 + e) (swapped for u < 0):
 * no cancellation where t is near 1, as there would be in 1 - t * t. */
#include "common.h"

#define INV_SQRT_2PI 0.3989422804014327f
#define SQRT_2_OVER_PI 0.7978845608028654f

static void exact_part(const float *restrict g, const float *restrict x, const float *restrict out,
                       float *restrict gx, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float cdf = out[i] * (1.0f / x[i]);
        cdf = cdf > -1.0f && cdf < 2.0f ? cdf : 0.5f; /* a nan or inf quotient fails both */
        gx[i] = (cdf + x[i] * exp_f32(-0.5f * x[i] * x[i]) * INV_SQRT_2PI) * g[i];
    }
}

static void tanh_part(const float *restrict g, const float *restrict x, const float *restrict out,
                      float *restrict gx, int64_t n) {
    (void)out;
    for (int64_t i = 0; i < n; i++) {
        float u = SQRT_2_OVER_PI * (x[i] + 0.044715f * x[i] * x[i] * x[i]);
        float e = exp_f32(-2.0f * __builtin_fabsf(u)), near = 2.0f * e / (1.0f + e), far = 2.0f / (1.0f + e);
        float one_minus_t = u < 0.0f ? far : near, one_plus_t = u < 0.0f ? near : far;
        float du = SQRT_2_OVER_PI * (1.0f + 3.0f * 0.044715f * (x[i] * x[i])); /* x^2 first: inf where it overflows */
        gx[i] = (0.5f * one_plus_t + 0.5f * x[i] * one_minus_t * one_plus_t * du) * g[i];
    }
}

void gelu_backward_f32(const float *g, const float *x, const float *out, float *gx, int64_t n, int tanh_form,
                       int threads) {
    #pragma omp parallel num_threads(threads)
    {
        int64_t begin, end;
        share(n, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
        (tanh_form ? tanh_part : exact_part)(g + begin, x + begin, out + begin, gx + begin, end - begin);
    }
}
