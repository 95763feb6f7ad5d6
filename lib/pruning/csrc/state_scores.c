/*
 * The CPU fast path of lib/pruning/state.py's importance(): a state-pruning
 * score of every entry of one tensor in one memory pass, for contiguous
 * float32 weights and moments. Loaded by lib/pruning/native.py with the
 * selection kernels (mask_select.c).
 *
 * importance() is where the formulas are defined, as torch operations: one
 * memory pass per operation (bitter7 makes six), which on a small model
 * costs more in per-operation overhead than the arithmetic. Each case below
 * performs the same float32 operations in the same order, each correctly
 * rounded (IEEE sqrtf; the build disables contraction into fused
 * multiply-adds). torch's vectorised CPU sqrt is not always correctly
 * rounded (one float in five is one ulp off on this machine's AVX-512
 * build), so a score here may differ from the torch operations' in its last
 * bit; tests/test_pruning_state.py checks every variant against float32
 * arithmetic done step by step. w weight, m exp_avg, v exp_avg_sq,
 * s structural weight:
 *
 *   MOMENTUM_STABILITY  bitter0           |m| * w * w / (sqrt(v) + eps)
 *   MOMENTUM            bitter3, 4, 8     |sqrt(|m| + eps) * w| * s
 *   VARIANCE            bitter7           |sqrt(sqrt(|v| + eps)) * w| * s
 *   VARIANCE_EPS_AFTER  bitter9           |(sqrt(sqrt(|v|)) + eps) * w| * s
 *
 * with s = 1 where a variant has no structural weight.
 *
 * Tensors of parallel_from entries or more are split over torch's OpenMP
 * threads (see mask_select.c).
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>

enum { MOMENTUM_STABILITY = 0, MOMENTUM = 1, VARIANCE = 2, VARIANCE_EPS_AFTER = 3 };

static void score_range(int form, const float *w, const float *m, const float *v, float s, float eps, float *out,
                        int64_t begin, int64_t end) {
    switch (form) {
    case MOMENTUM_STABILITY:
        for (int64_t i = begin; i < end; i++) out[i] = fabsf(m[i]) * w[i] * w[i] / (sqrtf(v[i]) + eps);
        break;
    case MOMENTUM:
        for (int64_t i = begin; i < end; i++) out[i] = fabsf(sqrtf(fabsf(m[i]) + eps) * w[i]) * s;
        break;
    case VARIANCE:
        for (int64_t i = begin; i < end; i++) out[i] = fabsf(sqrtf(sqrtf(fabsf(v[i]) + eps)) * w[i]) * s;
        break;
    default: /* VARIANCE_EPS_AFTER */
        for (int64_t i = begin; i < end; i++) out[i] = fabsf((sqrtf(sqrtf(fabsf(v[i]))) + eps) * w[i]) * s;
        break;
    }
}

/* Scores of n entries into out; s is 1 for variants without a structural weight (x * 1 is x, bit for bit). */
void state_scores(int form, const float *w, const float *m, const float *v, float s, float eps, float *out, int64_t n,
                  int threads, int64_t parallel_from) {
    if (threads <= 1 || n < parallel_from) {
        score_range(form, w, m, v, s, eps, out, 0, n);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        score_range(form, w, m, v, s, eps, out, n * t / nt, n * (t + 1) / nt);
    }
}
