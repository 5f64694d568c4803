/* Cross-entropy of N rows of C logits against one target class per row, forward and
 * backward, each in one pass over the rows:
 *   lse_i  = log sum_c e^(l_ic)                  (from the row's max m: m + log sum e^(l - m))
 *   loss_i = lse_i - l_(i, t_i)                  (0 where t_i is ignore_index)
 *   gl_ic  = (e^(l_ic - lse_i) - [c = t_i]) s_i  (0 in ignored rows; s_i the loss's grad, over
 *                                                 the count of rows not ignored for 'mean')
 * The formula (tinygraph.ops.nn.CrossEntropy) makes these as a dozen torch calls over the
 * logits; here each row is read once a pass. Logits are read through their row stride. */
#include "common.h"

/* Returns 0; 1 where a logit is not finite or a target is out of range (the formula then
 * runs: it raises torch's error for the target, and takes inf and nan as torch does). */
int cross_entropy_forward_f32(const float *logits, int64_t ld, const int64_t *target, int64_t N, int64_t C,
                              int64_t ignore, float *losses, float *lse, int threads) {
    int bad = 0;
    #pragma omp parallel num_threads(threads) reduction(| : bad)
    {
        int64_t begin, end;
        share(N, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
        for (int64_t i = begin; i < end; i++) {
            const float *l = logits + i * ld;
            float top = -__builtin_inff(), total = 0.0f, finite = 0.0f;
            #pragma omp simd reduction(max : top) reduction(+ : finite)
            for (int64_t c = 0; c < C; c++) {
                top = l[c] > top ? l[c] : top;
                finite += l[c] * 0.0f;
            }
            #pragma omp simd reduction(+ : total)
            for (int64_t c = 0; c < C; c++) total += exp_f32(l[c] - top);
            lse[i] = top + __builtin_logf(total);
            int64_t t = target[i];
            bad |= finite != 0.0f || (t != ignore && (t < 0 || t >= C));
            losses[i] = t == ignore || t < 0 || t >= C ? 0.0f : -(l[t] - lse[i]); /* (-0.0 at p = 1, as torch) */
        }
    }
    return bad;
}

/* `scale` holds one grad per row (scale_stride 1) or one for all (scale_stride 0). */
void cross_entropy_backward_f32(const float *logits, int64_t ld, const int64_t *target, const float *lse,
                                const float *scale, int64_t scale_stride, int64_t N, int64_t C, int64_t ignore,
                                float *grad, int threads) {
    #pragma omp parallel num_threads(threads)
    {
        int64_t begin, end;
        share(N, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
        for (int64_t i = begin; i < end; i++) {
            const float *l = logits + i * ld;
            float *gr = grad + i * C, s = target[i] == ignore ? 0.0f : scale[i * scale_stride], m = lse[i];
            #pragma omp simd
            for (int64_t c = 0; c < C; c++) gr[c] = exp_f32(l[c] - m) * s;
            if (target[i] != ignore && target[i] >= 0 && target[i] < C) gr[target[i]] -= s; /* (the forward checked) */
        }
    }
}
