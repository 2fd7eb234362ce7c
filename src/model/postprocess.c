/* postprocess.c: logits -> scores (softmax / sigmoid / none) and top-k,
 * as transformers' image-classification pipeline computes them in torch
 * float32.  Pure functions; any thread.
 */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* softmax, float32 like torch: m = max x; e_i = exp(x_i - m); s = sum e;
 * p_i = e_i / s.  logits, scores: (n); scores may equal logits. */
static void softmax(const float *x, int n, float *p)
{
    float m = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > m || isnan(x[i])) m = x[i];
    float s = 0.0f;
    for (int i = 0; i < n; i++) {
        p[i] = expf(x[i] - m);
        s += p[i];
    }
    for (int i = 0; i < n; i++) p[i] = p[i] / s;
}

void vs_scores_apply(enum vs_score_fn fn, const float *logits, int n, float *scores)
{
    if (n <= 0) return;
    switch (fn) {
    case VS_SCORE_SOFTMAX:
        softmax(logits, n, scores);
        break;
    case VS_SCORE_SIGMOID:          /* 1 / (1 + exp(-x)), float32 */
        for (int i = 0; i < n; i++) scores[i] = 1.0f / (1.0f + expf(-logits[i]));
        break;
    case VS_SCORE_NONE:
        if (scores != logits) memmove(scores, logits, (size_t)n * sizeof *scores);
        break;
    }
}

bool vs_score_fn_parse(const char *s, enum vs_score_fn *out)
{
    if (!s) return false;
    if (strcmp(s, "softmax") == 0) *out = VS_SCORE_SOFTMAX;
    else if (strcmp(s, "sigmoid") == 0) *out = VS_SCORE_SIGMOID;
    else if (strcmp(s, "none") == 0) *out = VS_SCORE_NONE;
    else return false;
    return true;
}

/* Does score a (index ia) rank before score b (index ib)?  Higher first,
 * NaN above everything (as torch.topk), ties by the lower index. */
static bool before(float a, int ia, float b, int ib)
{
    bool na = isnan(a), nb = isnan(b);
    if (na != nb) return na;
    if (!na && a != b) return a > b;
    return ia < ib;
}

int vs_topk(const float *scores, int n, int k, int *idx)
{
    if (n <= 0 || k <= 0) return 0;
    if (k > n) k = n;
    /* Large k: a bottom-up merge sort of all indices (stable, O(n log n),
     * two n-int buffers); falls back to insertion without memory. */
    if (k > 64) {
        int *all = malloc((size_t)n * sizeof *all);
        if (all) {
            for (int i = 0; i < n; i++) all[i] = i;
            int *tmp = all;
            int *buf = malloc((size_t)n * sizeof *buf);
            if (buf) {
                for (int w = 1; w < n; w *= 2) {
                    for (int lo = 0; lo < n; lo += 2 * w) {
                        int mid = VS_MIN(lo + w, n), hi = VS_MIN(lo + 2 * w, n);
                        int i = lo, j = mid, o = lo;
                        while (i < mid && j < hi)
                            buf[o++] = before(scores[tmp[j]], tmp[j], scores[tmp[i]], tmp[i])
                                           ? tmp[j++] : tmp[i++];
                        while (i < mid) buf[o++] = tmp[i++];
                        while (j < hi) buf[o++] = tmp[j++];
                    }
                    int *sw = tmp; tmp = buf; buf = sw;
                }
                memcpy(idx, tmp, (size_t)k * sizeof *idx);
                free(buf);
                free(tmp);
                return k;
            }
            free(all);
        }
    }
    /* Small k (or no memory): keep idx[0..m) sorted, insert each i. */
    int m = 0;
    float last = 0.0f;   /* scores[idx[k - 1]] once m == k: a plain '<' rejects most */
    bool last_nan = false;
    for (int i = 0; i < n; i++) {
        if (m == k && !last_nan && scores[i] < last) continue;
        if (m == k && !before(scores[i], i, scores[idx[k - 1]], idx[k - 1])) continue;
        int pos = m < k ? m : k - 1;
        while (pos > 0 && before(scores[i], i, scores[idx[pos - 1]], idx[pos - 1])) {
            idx[pos] = idx[pos - 1];
            pos--;
        }
        idx[pos] = i;
        if (m < k) m++;
        if (m == k) {
            last = scores[idx[k - 1]];
            last_nan = isnan(last);
        }
    }
    return m;
}
