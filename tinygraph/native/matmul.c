/* The linear layer's matrix products, c = a b (+ bias), as one loop nest:
 *   forward        y  = x weight^T + bias   a = x,    b = weight^T
 *   grad of x      gx = g weight            a = g,    b = weight
 *   grad of weight gw = g^T x               a = g^T,  b = x
 * a (M x K) is read through any strides, so g^T is g itself read down its columns; b (K x N)
 * is read a row at a time, so its rows must hold their columns side by side: where they do
 * not (weight^T) b is first copied, in blocks of W columns, into the order the loop reads.
 * c (M x N) is contiguous.
 *
 * Each block of c, R rows by W columns, stays in registers while the sum runs over a
 * chunk of KC of the summed dimension: R independent chains of FMAs (the units need not
 * wait on one another), one row of b loaded per step for all R rows of a, so a chunk of b's
 * W columns is read from cache, not memory, by every block of rows that needs it; threads
 * share out the blocks. R, W and KC were measured (docs/performance.md): at a language
 * model's shapes the loop beats both libraries torch has, MKL and oneDNN, on an AVX-512
 * machine; elsewhere matmul.py leaves the product to torch. Every block sums in one order
 * whatever the thread count, so results do not depend on it. */
#include <stdlib.h>
#include <string.h>
#include "common.h"

#ifdef __AVX512F__
#define W 32 /* floats: two AVX-512 registers */
#define R 8
#define TUNED 1 /* the block sizes were measured on this kind of machine */
#else
#define W 16 /* two AVX2 registers, four NEON ones */
#define R 6
#define TUNED 0
#endif
#define KC 512 /* a chunk of the summed dimension: R x KC of a and KC x W of b stay in cache */
#define MC (8 * R) /* at most, rows a thread takes in turn over every block of columns (their chunk of a
                     stays in cache): whole blocks of R, or two chunks would share a block's rows */

typedef struct {
    const float *a, *b, *bias;
    float *c;
    int64_t sa0, sa1;     /* a's strides */
    int64_t panel, ldb;   /* b's element (p, j) of block bj lies at b[bj * panel + p * ldb + j % W] */
    int64_t sbias, M, N, K;
} product;

/* c's block of rows [i0, i0 + R) and columns [bj W, bj W + W), over the sum's chunk [p0, p1):
 * started from zero in the first chunk, from c in the others. Rows past M repeat the last
 * row (their sums are not stored); columns past N are zeros of the copied b. */
static inline void block(const product *x, int64_t i0, int64_t bj, int64_t p0, int64_t p1) {
    int64_t j0 = bj * W;
    int rows = x->M - i0 < R ? (int)(x->M - i0) : R, cols = x->N - j0 < W ? (int)(x->N - j0) : W;
    const float *a[R];
    for (int r = 0; r < R; r++) a[r] = x->a + (i0 + (r < rows ? r : rows - 1)) * x->sa0 + p0 * x->sa1;
    const float *b = x->b + bj * x->panel + p0 * x->ldb;
    float acc[R][W] = {{0}};
    for (int64_t p = 0; p < p1 - p0; p++) {
        const float *bp = b + p * x->ldb;
        for (int r = 0; r < R; r++) {
            float ar = a[r][p * x->sa1];
            #pragma omp simd
            for (int j = 0; j < W; j++) acc[r][j] += ar * bp[j];
        }
    }
    float *c = x->c + i0 * x->N + j0;
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * x->N;
        if (p0 > 0)
            for (int j = 0; j < cols; j++) acc[r][j] += cr[j];
        if (p1 == x->K && x->bias)
            for (int j = 0; j < cols; j++) acc[r][j] += x->bias[(j0 + j) * x->sbias];
        memcpy(cr, acc[r], cols * sizeof(float));
    }
}

/* b's columns in blocks of W, each block's K rows one after another (zeros past N). A block's
 * rows are written in turn, each gathered from W rows of weight (b = weight^T) read side by
 * side: reading each row of weight through instead wrote a cache line of the block per float. */
static void copy_in_blocks(const float *b, int64_t sb0, int64_t sb1, int64_t K, int64_t N, float *to) {
    #pragma omp for schedule(static)
    for (int64_t bj = 0; bj < (N + W - 1) / W; bj++) {
        int64_t j0 = bj * W, cols = N - j0 < W ? N - j0 : W;
        for (int64_t p = 0; p < K; p++) {
            const float *from = b + p * sb0 + j0 * sb1;
            float *row = to + bj * K * W + p * W;
            for (int64_t j = 0; j < cols; j++) row[j] = from[j * sb1];
            for (int64_t j = cols; j < W; j++) row[j] = 0.0f;
        }
    }
}

/* For matmul.py: whether to use the loop here (where its block sizes were measured). */
int matmul_tuned(void) { return TUNED; }

/* Returns 1 where the copy of b could not be allocated, else 0. */
int matmul_f32(const float *a, int64_t sa0, int64_t sa1, const float *b, int64_t sb0, int64_t sb1,
               const float *bias, int64_t sbias, float *c, int64_t M, int64_t N, int64_t K, int threads) {
    if (M == 0 || N == 0) return 0;
    float *copy = NULL;
    if (sb1 != 1 || N % W) {
        copy = malloc((N + W - 1) / W * W * (K > 0 ? K : 1) * sizeof(float));
        if (!copy) return 1;
    }
    product x = {a, copy ? copy : b, bias, c, sa0, sa1, copy ? K * W : W, copy ? W : sb0, sbias, M, N, K};
    /* chunks of rows alike (65 rows: 40 and 25, not 64 and 1) */
    int64_t chunks = (M + MC - 1) / MC, blocks = (N + W - 1) / W;
    int64_t rows = ((M + chunks - 1) / chunks + R - 1) / R * R;
    chunks = (M + rows - 1) / rows;
    /* A thread's share of the (chunk, block) pairs runs along the blocks of columns for each
     * chunk in turn, so that its chunk of a stays in cache; but with no more chunks than threads
     * (a product of few rows: generating one sequence, say) that would leave threads idle or
     * uneven, and each would read blocks of b that another copied: then a thread takes all the
     * rows of its share of the blocks (mostly the blocks it copied). */
    int by_columns = chunks <= threads;
    int64_t pairs = chunks * blocks;
    #pragma omp parallel num_threads(threads)
    {
        if (copy) copy_in_blocks(b, sb0, sb1, K, N, copy); /* (its loop ends in a barrier) */
        for (int64_t p0 = 0;; p0 += KC) {
            int64_t p1 = p0 + KC < K ? p0 + KC : K;
            /* no barrier between chunks: a static schedule gives each thread the same blocks */
            #pragma omp for schedule(static) nowait
            for (int64_t t = 0; t < pairs; t++) {
                int64_t ci = by_columns ? t % chunks : t / blocks, bj = by_columns ? t / chunks : t % blocks;
                for (int64_t i0 = ci * rows; i0 < M && i0 < (ci + 1) * rows; i0 += R) block(&x, i0, bj, p0, p1);
            }
            if (p1 >= K) break;
        }
    }
    free(copy);
    return 0;
}

/* The linear layer's backward in one call: gx = g weight (where gx is not NULL) and gw = g^T x
 * (where gw is not NULL), g (M x N) and x (M x K) rows of the leading dims flattened, weight
 * N x K. Returns 1 where a copy of an operand could not be allocated, else 0. */
int linear_grads_f32(const float *g, int64_t sg0, int64_t sg1, const float *x, int64_t sx0, int64_t sx1,
                     const float *w, int64_t sw0, int64_t sw1, float *gx, float *gw, int64_t M, int64_t N, int64_t K,
                     int threads) {
    if (gx && matmul_f32(g, sg0, sg1, w, sw0, sw1, NULL, 0, gx, M, K, N, threads)) return 1;
    if (gw && matmul_f32(g, sg1, sg0, x, sx0, sx1, NULL, 0, gw, N, K, M, threads)) return 1;
    return 0;
}

