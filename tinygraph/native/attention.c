/* Attention, forward and backward, one (batch, head) at a time, with or without the causal
 * mask (row i sees keys j <= i):
 *   s_ij  = q_i . k_j scale,  lse_i = log sum_j e^s_ij,  P_ij = e^(s_ij - lse_i)  (softmax_j)
 *   out_i = sum_j P_ij v_j
 *   D_i   = g_i . out_i                   (= sum_j P_ij (g_i . v_j): softmax's backward term)
 *   GS_ij = P_ij (g_i . v_j - D_i) scale  (the scores' grad, the scale folded in)
 *   gq_i  = sum_j GS_ij k_j,   gk_j = sum_i GS_ij q_i,   gv_j = sum_i P_ij g_i
 * The torch formula makes these as five batched products over copied heads plus a softmax,
 * each a pass over every head's (L, S) weights. Here one head's weights stay in its
 * thread's cache, a causal head's masked half is skipped, and every tensor is read and
 * written through its strides (a view of a QKV projection needs no copy). The forward
 * keeps lse; with it the backward makes P in one pass (without it: the max, the sum and
 * the division, as the forward does).
 *
 * Every product is a block of R rows by W floats whose R x W sums stay in registers (R
 * independent chains, so the FMA units need not wait on one another): the scores against
 * a transposed copy of k (and of v, for g . v), the rest as weighted sums of rows. Head
 * widths come in whole blocks (multiples of W; attention.py leaves others to the formula).
 *
 * Every tensor is (B, H, rows, features) with features contiguous and its own strides for
 * the first three dims; `st` holds them: 3 per tensor, in the order of `enum tensor`. */
#include <stdlib.h>
#include <string.h>
#include "common.h"

#define W 16 /* floats in a block: two AVX2 registers, one AVX-512 register */
#define R 4  /* rows in a block */

const int attention_block = W; /* for attention.py: the head widths covered are its multiples */

enum tensor { Q, K, V, OUT, G, GQ, GK, GV };

typedef struct {
    const float *t[8];
    const int64_t *st;
    int64_t L, S, E, Ev, Lp, Sp; /* Lp, Sp: L and S padded to multiples of R and W */
    float scale;
    int causal;
} attention_args;

/* The keys row i sees: all S, or (causal) the first i + 1. */
static inline int64_t seen(const attention_args *a, int64_t i) {
    return a->causal ? (i + 1 < a->S ? i + 1 : a->S) : a->S;
}

static inline float *row(const attention_args *a, enum tensor n, int64_t b, int64_t h, int64_t i) {
    const int64_t *st = a->st + 3 * n;
    return (float *)a->t[n] + b * st[0] + h * st[1] + i * st[2];
}

/* R rows of tensor n from row i, and where the rows end `zeros`. */
static inline void rows_of(const attention_args *a, enum tensor n, int64_t b, int64_t h, int64_t i, int64_t rows,
                           const float *zeros, const float *x[R]) {
    for (int r = 0; r < R; r++) x[r] = i + r < rows ? row(a, n, b, h, i + r) : zeros;
}

/* The S rows of tensor n (k or v), `width` features, as width x Sp (zeros past S). Returns
 * 0, or nan where a value is not finite (x * 0 is nan for inf and nan). */
static float transposed(const attention_args *a, enum tensor n, int64_t b, int64_t h, int64_t width, float *to) {
    float finite = 0.0f;
    for (int64_t j = 0; j < a->S; j++) {
        const float *restrict x = row(a, n, b, h, j);
        #pragma omp simd reduction(+ : finite)
        for (int64_t e = 0; e < width; e++) finite += x[e] * 0.0f;
        for (int64_t e = 0; e < width; e++) to[e * a->Sp + j] = x[e]; /* (apart: no chain of adds to wait on) */
    }
    for (int64_t e = 0; e < width; e++)
        for (int64_t j = a->S; j < a->Sp; j++) to[e * a->Sp + j] = 0.0f;
    return finite;
}

/* to[r][jb + c] = sum_e x[r][e] yT[e][jb + c], for every block jb < reach: R rows of products
 * with the keys (or values), each block of W in registers. */
static inline void products(const float *x[R], const float *restrict yT, int64_t width, int64_t Sp, int64_t reach,
                            float *to) {
    for (int64_t jb = 0; jb < reach; jb += W) {
        float acc[R][W] = {{0}};
        for (int64_t e = 0; e < width; e++) {
            const float *y = yT + e * Sp + jb;
            for (int r = 0; r < R; r++) {
                float xe = x[r][e];
                #pragma omp simd
                for (int c = 0; c < W; c++) acc[r][c] += xe * y[c];
            }
        }
        for (int r = 0; r < R; r++) memcpy(to + r * Sp + jb, acc[r], sizeof(acc[r]));
    }
}

/* to[r][..width) = sum over i in [i0, i1) of w[r][i * step] y_i, y_i the rows of tensor n: R
 * weighted sums of rows, each row read once for all R; a NULL to[r] is not written. */
static inline void weighted_rows(const attention_args *a, enum tensor n, int64_t b, int64_t h, const float *w[R],
                                 int64_t step, int64_t i0, int64_t i1, int64_t width, float *to[R]) {
    for (int64_t c0 = 0; c0 < width; c0 += W) {
        float acc[R][W] = {{0}};
        for (int64_t i = i0; i < i1; i++) {
            const float *y = row(a, n, b, h, i) + c0;
            for (int r = 0; r < R; r++) {
                float wi = w[r][i * step];
                #pragma omp simd
                for (int c = 0; c < W; c++) acc[r][c] += wi * y[c];
            }
        }
        for (int r = 0; r < R; r++)
            if (to[r]) memcpy(to[r] + c0, acc[r], sizeof(acc[r]));
    }
}

/* P's R rows from row i0 (each Sp wide): the weights of those queries, zeros past the keys
 * each sees (and for rows past L); from the rows' logsumexps lse_in where it is not NULL,
 * else found, and then written to lse_out where it is not NULL. Returns the keys the
 * block's last row sees. */
static int64_t weights(const attention_args *a, int64_t b, int64_t h, int64_t i0, const float *kT, const float *zeros,
                       float *P, const float *lse_in, float *lse_out) {
    int64_t last = i0 + R < a->L ? i0 + R - 1 : a->L - 1, reach = seen(a, last);
    const float *q[R];
    rows_of(a, Q, b, h, i0, a->L, zeros, q);
    products(q, kT, a->E, a->Sp, reach, P);
    float scale = a->scale;
    for (int64_t r = 0; lse_in && r < R; r++) { /* P_ij = e^(s_ij - lse_i): one pass */
        float *Pr = P + r * a->Sp, top = i0 + r < a->L ? lse_in[i0 + r] : __builtin_inff();
        int64_t n = i0 + r < a->L ? seen(a, i0 + r) : 0, blocks = (n + W - 1) / W * W;
        #pragma omp simd
        for (int64_t j = 0; j < blocks; j++) Pr[j] = j < n ? exp_f32(Pr[j] * scale - top) : 0.0f;
        for (int64_t j = blocks; j < a->Sp; j++) Pr[j] = 0.0f;
    }
    for (int64_t r = 0; !lse_in && r < R; r++) {
        /* over whole blocks (no scalar tail), the keys past the n seen at -inf: weight 0 */
        float *Pr = P + r * a->Sp, top = -__builtin_inff(), total = 0.0f;
        int64_t n = i0 + r < a->L ? seen(a, i0 + r) : 0, blocks = (n + W - 1) / W * W;
        #pragma omp simd reduction(max : top)
        for (int64_t j = 0; j < blocks; j++) {
            Pr[j] = j < n ? Pr[j] * scale : -__builtin_inff();
            top = Pr[j] > top ? Pr[j] : top;
        }
        #pragma omp simd reduction(+ : total)
        for (int64_t j = 0; j < blocks; j++) {
            Pr[j] = exp_f32(Pr[j] - top);
            total += Pr[j];
        }
        float inv = 1.0f / total;
        #pragma omp simd
        for (int64_t j = 0; j < blocks; j++) Pr[j] *= inv;
        for (int64_t j = blocks; j < a->Sp; j++) Pr[j] = 0.0f;
        if (lse_out && i0 + r < a->L) lse_out[i0 + r] = top + __builtin_logf(total);
    }
    return reach;
}

/* Read one float of every 64 bytes of one head's rows of q, k, v, out and g, in one loop of
 * loads that do not wait on one another. In a training step these rows come from memory
 * (the forward wrote them long before), strided (a head's part of each row of a QKV
 * projection), which the processor's own prefetching does not follow; fetched this way,
 * many at once, they arrive in a fraction of the time the products would wait for them one
 * row at a time: in a baby step 0.54-0.58 ms a call against 0.75-0.81 without. (Prefetch
 * instructions for the same lines, for the next head, did not help there.) Returns 0, or
 * nan where a value read is not finite or their sum overflows (values near 1e38: the call
 * then goes to the formula, as for a value not finite; the check proper is the rest of
 * the kernel's). */
static float touch_head(const attention_args *a, int64_t b, int64_t h) {
    float sums[4] = {0};
    for (int n = Q; n <= G; n++) {
        int64_t rows = n == K || n == V ? a->S : a->L, width = n == V || n == OUT || n == G ? a->Ev : a->E;
        for (int64_t i = 0; i < rows; i++) {
            const float *x = row(a, (enum tensor)n, b, h, i);
            for (int64_t e = 0; e < width; e += 16) sums[(i + e / 16) & 3] += x[e];
        }
    }
    return (sums[0] + sums[1] + sums[2] + sums[3]) * 0.0f;
}

/* One head's grads, with its rows' logsumexps (NULL: found anew). `buf`: kT (E x Sp), vT
 * (Ev x Sp), P and GS (Lp x Sp each), a row of zeros (max(E, Ev)). Returns 0, or nan where an input is not finite: then the skipped
 * (masked) products would not be 0 * x = 0, and torch's grads are nan in places this
 * loop never visits (attention_backward_f32 then leaves the head to the formula). */
static float backward_head(const attention_args *a, int64_t b, int64_t h, const float *lse, float *buf) {
    int64_t L = a->L, S = a->S, Sp = a->Sp, E = a->E, Ev = a->Ev;
    float scale = a->scale, *kT = buf, *vT = kT + E * Sp, *P = vT + Ev * Sp, *GS = P + a->Lp * Sp, *zeros = GS + a->Lp * Sp;
    float finite = touch_head(a, b, h) + transposed(a, K, b, h, E, kT) + transposed(a, V, b, h, Ev, vT);
    for (int64_t i0 = 0; i0 < L; i0 += R) {
        float *Pb = P + i0 * Sp, *GSb = GS + i0 * Sp; /* this block's rows */
        int64_t reach = weights(a, b, h, i0, kT, zeros, Pb, lse, NULL), blocks = (reach + W - 1) / W * W;
        const float *g[R];
        rows_of(a, G, b, h, i0, L, zeros, g);
        products(g, vT, Ev, Sp, reach, GSb); /* g_i . v_j */
        for (int64_t r = 0; r < R; r++) {
            float *Pr = Pb + r * Sp, *GSr = GSb + r * Sp, d = 0.0f;
            const float *restrict o = i0 + r < L ? row(a, OUT, b, h, i0 + r) : zeros, *restrict gr = g[r];
            #pragma omp simd reduction(+ : d, finite)
            for (int64_t e = 0; e < Ev; e++) {
                d += gr[e] * o[e];
                finite += (gr[e] + o[e]) * 0.0f;
            }
            const float *qr = i0 + r < L ? row(a, Q, b, h, i0 + r) : zeros;
            #pragma omp simd reduction(+ : finite)
            for (int64_t e = 0; e < E; e++) finite += qr[e] * 0.0f;
            #pragma omp simd
            for (int64_t j = 0; j < blocks; j++) GSr[j] = Pr[j] * (GSr[j] - d) * scale;
            for (int64_t j = blocks; j < Sp; j++) GSr[j] = 0.0f;
        }
        const float *w[R];
        float *gq[R];
        for (int r = 0; r < R; r++) {
            w[r] = GSb + r * Sp;
            gq[r] = i0 + r < L ? row(a, GQ, b, h, i0 + r) : NULL;
        }
        weighted_rows(a, K, b, h, w, 1, 0, reach, E, gq);
    }
    for (int64_t j0 = 0; j0 < S; j0 += R) {
        const float *ws[R], *wp[R];
        float *gk[R], *gv[R];
        for (int r = 0; r < R; r++) {
            int64_t j = j0 + r < S ? j0 + r : j0;
            ws[r] = GS + j, wp[r] = P + j;
            gk[r] = j0 + r < S ? row(a, GK, b, h, j) : NULL;
            gv[r] = j0 + r < S ? row(a, GV, b, h, j) : NULL;
        }
        int64_t first = a->causal ? j0 : 0; /* (rows before j0 see none of these keys) */
        weighted_rows(a, Q, b, h, ws, Sp, first, L, E, gk);
        weighted_rows(a, G, b, h, wp, Sp, first, L, Ev, gv);
    }
    return finite;
}

/* The grads of every head; lse as the forward's, or NULL. Returns 0; 1 when an input holds
 * an inf or a nan (the grads are then the formula's to make); -1 when a thread's buffer could not be allocated (some heads' grads not written). */
int attention_backward_f32(const float *q, const float *k, const float *v, const float *out, const float *g,
                           float *gq, float *gk, float *gv, const float *lse, const int64_t *strides, int64_t B, int64_t H,
                           int64_t L, int64_t S, int64_t E, int64_t Ev, float scale, int causal, int threads) {
    attention_args a = {{q, k, v, out, g, gq, gk, gv}, strides, L, S, E, Ev, (L + R - 1) / R * R,
                        (S + W - 1) / W * W, scale, causal};
    size_t floats = (size_t)((E + Ev + 2 * a.Lp) * a.Sp + (E > Ev ? E : Ev));
    int failed = 0, nonfinite = 0;
    #pragma omp parallel num_threads(threads) reduction(| : failed, nonfinite)
    {
        float *buf = calloc(floats, sizeof(float)); /* (zeros: the row of zeros in it stays so) */
        if (!buf) {
            failed = 1;
        } else {
            int64_t begin, end;
            share(B * H, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
            for (int64_t t = begin; t < end; t++) nonfinite |= backward_head(&a, t / H, t % H, lse ? lse + t * L : NULL, buf) != 0.0f;
            free(buf);
        }
    }
    return failed ? -1 : nonfinite;
}

/* One head's output, out_i = sum_j P_ij v_j, and each row's logsumexp of the scaled scores
 * (lse, L floats). `buf`: kT (E x Sp), P (R x Sp), a row of zeros (E). */
static float forward_head(const attention_args *a, int64_t b, int64_t h, float *lse, float *buf) {
    float *kT = buf, *P = kT + a->E * a->Sp, *zeros = P + R * a->Sp, finite = transposed(a, K, b, h, a->E, kT);
    for (int64_t j = 0; j < a->S; j++) {
        const float *vj = row(a, V, b, h, j);
        #pragma omp simd reduction(+ : finite)
        for (int64_t e = 0; e < a->Ev; e++) finite += vj[e] * 0.0f;
    }
    for (int64_t i0 = 0; i0 < a->L; i0 += R) {
        int64_t reach = weights(a, b, h, i0, kT, zeros, P, NULL, lse);
        const float *w[R];
        float *o[R];
        for (int r = 0; r < R; r++) {
            w[r] = P + r * a->Sp;
            o[r] = i0 + r < a->L ? row(a, OUT, b, h, i0 + r) : NULL;
            if (i0 + r < a->L) finite += lse[i0 + r] * 0.0f; /* (nan where a q or k was not finite) */
        }
        weighted_rows(a, V, b, h, w, 1, 0, reach, a->Ev, o);
    }
    return finite;
}

/* out and lse (B x H x L, contiguous) of every head; `strides` holds those of q, k, v and
 * out. Returns 0; 1 when an input holds an inf or a nan (attention.py then leaves the call
 * to torch's attention); -1 when a thread's buffer could not be allocated. */
int attention_forward_f32(const float *q, const float *k, const float *v, float *out, float *lse,
                          const int64_t *strides, int64_t B, int64_t H, int64_t L, int64_t S, int64_t E, int64_t Ev,
                          float scale, int causal, int threads) {
    attention_args a = {{q, k, v, out, 0, 0, 0, 0}, strides, L, S, E, Ev, (L + R - 1) / R * R,
                        (S + W - 1) / W * W, scale, causal};
    size_t floats = (size_t)((E + R) * a.Sp + E);
    int failed = 0, nonfinite = 0;
    #pragma omp parallel num_threads(threads) reduction(| : failed, nonfinite)
    {
        float *buf = calloc(floats, sizeof(float));
        if (!buf) {
            failed = 1;
        } else {
            int64_t begin, end;
            share(B * H, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
            for (int64_t t = begin; t < end; t++) nonfinite |= forward_head(&a, t / H, t % H, lse + t * L, buf) != 0.0f;
            free(buf);
        }
    }
    return failed ? -1 : nonfinite;
}
