/* Layer norm's backward over `rows` rows of `d` features, from the forward's per-row mean
 * and rstd, in two passes over each row (the row sums, then gx) where the torch formula
 * makes a dozen over all of it:
 *   xhat = (x - mean) rstd,  gxhat = g w
 *   gx = (gxhat - mean(gxhat) - xhat mean(gxhat xhat)) rstd
 *   gw = sum over rows of g xhat,  gb = sum over rows of g
 * Each thread sums gw and gb over its own rows, in float over blocks of ROWS rows (float64
 * conversions on every row cost more than the rest of the loop) and each block's sums in
 * float64 (an error of float's rounding times about sqrt(ROWS), where summing every row in
 * float64 had none); the partial sums are added at the end in thread order, so a result
 * does not depend on timing. `w` may be NULL (no weight); gw and gb are always written.
 * `add`, where not NULL, is a grad already waiting for x (the residual stream's, say): gx
 * is returned with it added, in the same pass, where the engine would add the two after. */
#include <stdlib.h>
#include "common.h"

#define ROWS 32

static void rows_part(const float *restrict g, const float *restrict x, const float *restrict mean,
                      const float *restrict rstd, const float *restrict w, const float *restrict add, float *restrict gx,
                      double *restrict gw, double *restrict gb, float *restrict fw, float *restrict fb, int64_t r0,
                      int64_t r1, int64_t d) {
    for (int64_t b0 = r0; b0 < r1; b0 += ROWS) {
        for (int64_t j = 0; j < d; j++) fw[j] = fb[j] = 0.0f;
        for (int64_t r = b0; r < r1 && r < b0 + ROWS; r++) {
            const float *gr = g + r * d, *xr = x + r * d;
            float *gxr = gx + r * d;
            float m = mean[r], s = rstd[r], sum_gxhat = 0.0f, sum_gxhat_xhat = 0.0f;
            #pragma omp simd reduction(+ : sum_gxhat, sum_gxhat_xhat)
            for (int64_t j = 0; j < d; j++) {
                float xhat = (xr[j] - m) * s, gxhat = w ? gr[j] * w[j] : gr[j];
                fw[j] += gr[j] * xhat;
                fb[j] += gr[j];
                sum_gxhat += gxhat;
                sum_gxhat_xhat += gxhat * xhat;
            }
            float mean_gxhat = sum_gxhat / (float)d, mean_gxhat_xhat = sum_gxhat_xhat / (float)d;
            const float *addr = add ? add + r * d : NULL;
            for (int64_t j = 0; j < d; j++) {
                float xhat = (xr[j] - m) * s, gxhat = w ? gr[j] * w[j] : gr[j];
                gxr[j] = (gxhat - mean_gxhat - xhat * mean_gxhat_xhat) * s + (addr ? addr[j] : 0.0f);
            }
        }
        for (int64_t j = 0; j < d; j++) {
            gw[j] += (double)fw[j];
            gb[j] += (double)fb[j];
        }
    }
}

/* Returns 0, or -1 when the partial sums could not be allocated (nothing is written then). */
int layer_norm_backward_f32(const float *g, const float *x, const float *mean, const float *rstd, const float *w,
                            const float *add, float *gx, float *gw, float *gb, int64_t rows, int64_t d, int threads) {
    /* per thread: 2 d float64 sums, then 2 d float ones (a block's) */
    double *partial = calloc((size_t)threads * 3 * (size_t)d, sizeof(double));
    if (!partial) return -1;
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num();
        int64_t begin, end;
        share(rows, t, omp_get_num_threads(), &begin, &end);
        double *sums = partial + (size_t)t * 2 * d;
        float *block = (float *)(partial + (size_t)threads * 2 * d + (size_t)t * d);
        rows_part(g, x, mean, rstd, w, add, gx, sums, sums + d, block, block + d, begin, end, d);
    }
    for (int64_t j = 0; j < d; j++) {
        double sw = 0.0, sb = 0.0;
        for (int t = 0; t < threads; t++) {
            sw += partial[(size_t)t * 2 * d + j];
            sb += partial[(size_t)t * 2 * d + d + j];
        }
        gw[j] = (float)sw;
        gb[j] = (float)sb;
    }
    free(partial);
    return 0;
}
