/*
 * CPU kernels of the exact lowest-k selection (lib/pruning/threshold.py) for
 * non-negative float32 scores and bool keep-masks, loaded by
 * lib/pruning/native.py.
 *
 * An entry's key is 0 when its mask is 0 (already pruned: below every other
 * entry) and its float bits + 1 otherwise; non-negative floats order like
 * their bits. These are the keys `threshold.nonnegative_keys` makes with
 * torch operations, one memory pass each; here one pass makes them, filters
 * them by their high 16 bits and counts a 16-bit digit (torch's bincount
 * runs on one thread). select_histogram counts; select_split, once the high
 * bits of the k-th key are known, writes the masks and records the few
 * entries that share them; select_keep writes the masks from a full key.
 * select_small does a whole small selection in one call, and mask_zero
 * clears the pruned entries of many tensors (lib/pruning/masking.py).
 *
 * Threads: OpenMP. Built with -fopenmp, the library asks for libgomp.so.1,
 * which the dynamic loader resolves to the copy torch has already loaded,
 * so these loops run on torch's own worker threads, not on new ones that
 * would compete with them for the cores.
 */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BINS 65536
#define SPREAD 8 /* spare bins after the BINS of a histogram, see count_digits */
#define INF_BITS 0x7F800000u /* +inf; above it a NaN, from 0x80000000 a negative float */
#define MAX_THREADS 256

enum { OK = 0, HAS_NAN = 1, HAS_NEGATIVE = 2 };

/* Count the digits of entries [begin, end) into h (BINS + SPREAD); returns the largest score bits seen. */
static uint32_t count_digits(const uint32_t *bits, const uint8_t *mask, int64_t begin, int64_t end, int64_t prefix,
                             int64_t *h) {
    uint32_t worst = 0;
    if (prefix < 0) {
        /* Pruned entries (key 0, bin 0) are often a third or more of all: counted in one bin, each
         * increment would wait for the one before; spread over SPREAD spare bins, they do not. */
        for (int64_t i = begin; i < end; i++) {
            uint32_t x = bits[i];
            uint32_t kept = 0u - (uint32_t)mask[i]; /* all ones or zero: no branch to mispredict */
            worst = x > worst ? x : worst;
            h[(((x + 1u) >> 16) & kept) | ((BINS + ((uint32_t)i & (SPREAD - 1))) & ~kept)]++;
        }
        for (int s = 0; s < SPREAD; s++) {
            h[0] += h[BINS + s];
            h[BINS + s] = 0;
        }
    } else {
        uint32_t p = (uint32_t)prefix;
        for (int64_t i = begin; i < end; i++) {
            uint32_t k = (bits[i] + 1u) & (0u - (uint32_t)mask[i]);
            if ((k >> 16) == p) h[k & 0xFFFFu]++;
        }
    }
    return worst;
}

/*
 * Add to hist (BINS + SPREAD int64 counts, the last SPREAD zero and left so)
 * the high 16 bits of every key (prefix < 0) or the low 16 bits of the keys
 * whose high 16 bits equal prefix. On the first kind of pass, with check,
 * returns HAS_NAN or HAS_NEGATIVE when a score is NaN or negative (-0.0
 * included), else OK.
 */
int select_histogram(const float *scores, const uint8_t *mask, int64_t n, int64_t prefix, int check, int64_t *hist,
                     int threads) {
    const uint32_t *bits = (const uint32_t *)scores;
    uint32_t worst = 0;
    if (threads <= 1) {
        worst = count_digits(bits, mask, 0, n, prefix, hist);
    } else {
        int64_t *local = calloc((size_t)threads * (BINS + SPREAD), sizeof(int64_t));
        if (!local) return select_histogram(scores, mask, n, prefix, check, hist, 1);
        int used = 1;
#pragma omp parallel num_threads(threads) reduction(max : worst)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
            used = nt;
            worst = count_digits(bits, mask, n * t / nt, n * (t + 1) / nt, prefix, local + (size_t)t * (BINS + SPREAD));
        }
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int b = 0; b < BINS; b++)
            for (int t = 0; t < used; t++) hist[b] += local[(size_t)t * (BINS + SPREAD) + b];
        free(local);
    }
    if (!check || worst <= INF_BITS) return OK;
    return worst < 0x80000000u ? HAS_NAN : HAS_NEGATIVE;
}

/* out[i] = key > threshold (key >= threshold when inclusive); out may be mask itself. */
void select_keep(const float *scores, const uint8_t *mask, int64_t n, uint32_t threshold, int inclusive, uint8_t *out,
                 int threads) {
    const uint32_t *bits = (const uint32_t *)scores;
    uint32_t t = inclusive ? threshold : threshold + 1u; /* key >= t either way (threshold < 2^31: no overflow) */
#pragma omp parallel for num_threads(threads > 1 ? threads : 1) schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = ((bits[i] + 1u) & (0u - (uint32_t)mask[i])) >= t;
}

/* select_split over entries [begin, end): candidates go to index/key from 0; -1 past capacity. */
static int64_t split_range(const uint32_t *bits, const uint8_t *mask, int64_t begin, int64_t end, uint32_t prefix,
                           uint8_t *out, int64_t *index, int32_t *key, int64_t capacity) {
    int64_t c = 0;
    for (int64_t i = begin; i < end; i++) {
        uint32_t k = (bits[i] + 1u) & (0u - (uint32_t)mask[i]);
        uint32_t high = k >> 16;
        out[i] = high > prefix;
        if (high == prefix) {
            if (c == capacity) return -1;
            index[c] = i;
            key[c] = (int32_t)k;
            c++;
        }
    }
    return c;
}

/*
 * The last pass, once the first has found the high 16 bits (prefix) of the
 * k-th key: out[i] = (key >> 16) > prefix for every entry, settled for all
 * but the candidates, the entries whose high bits equal prefix; those are
 * recorded in index order, their index into index[] and their key into
 * key[], for the caller to settle among themselves. Returns how many, or -1
 * when more than capacity. out may be mask itself.
 */
int64_t select_split(const float *scores, const uint8_t *mask, int64_t n, int64_t prefix, uint8_t *out, int64_t *index,
                     int32_t *key, int64_t capacity, int threads) {
    const uint32_t *bits = (const uint32_t *)scores;
    if (threads <= 1) return split_range(bits, mask, 0, n, (uint32_t)prefix, out, index, key, capacity);
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    int64_t counts[MAX_THREADS];
    int64_t *indices[MAX_THREADS];
    int32_t *keys[MAX_THREADS];
    int used = 1;
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
        used = nt;
        /* thread 0 writes in place; the others into their own arrays, appended after */
        indices[t] = t ? malloc((size_t)(capacity ? capacity : 1) * sizeof(int64_t)) : index;
        keys[t] = t ? malloc((size_t)(capacity ? capacity : 1) * sizeof(int32_t)) : key;
        counts[t] = t == 0 || (indices[t] && keys[t]) ? split_range(/* index, key: NULL when empty (capacity 0) */bits, mask, n * t / nt, n * (t + 1) / nt, (uint32_t)prefix, out,
                                                         indices[t], keys[t], capacity)
                                           : -1;
    }
    int64_t total = 0;
    for (int t = 0; t < used; t++) {
        if (counts[t] < 0 || total + counts[t] > capacity) total = -1;
        if (t && total >= 0) {
            memcpy(index + total, indices[t], (size_t)counts[t] * sizeof(int64_t));
            memcpy(key + total, keys[t], (size_t)counts[t] * sizeof(int32_t));
        }
        if (total >= 0) total += counts[t];
        if (t) {
            free(indices[t]);
            free(keys[t]);
        }
    }
    return total;
}

/*
 * Small selections in one call (below PARALLEL_FROM entries: LeNet-5's 62K),
 * where each torch operation of the passes above (a 65536-bin histogram,
 * its cumsum, the concatenated and split masks) costs more than the work.
 * scores holds the flat scores of `parts` tensors one after another; masks[p]
 * (sizes[p] entries) is the p-th tensor's mask, updated in place: the
 * n_prune lowest keys (1 <= n_prune <= the sum of sizes) are pruned, ties in flat order,
 * as select_histogram/select_split and the caller's settling do. Radix
 * select over 11/11/9-bit digits: a histogram pass over all entries, a
 * split pass that writes every mask but those of the candidates (keys in the
 * k-th key's top bin), then two small passes over the candidates alone.
 * Returns OK, HAS_NAN, HAS_NEGATIVE, or NO_MEMORY.
 */
#define SMALL_BINS 2048 /* the widest digit: 11 bits */
enum { NO_MEMORY = 3 };

/* The bin holding the rank-th smallest count (1-based), and how many lie below it. */
static int pick_bin(const uint32_t *h, int bins, int64_t rank, int64_t *below) {
    int64_t cum = 0;
    int b = 0;
    while (b < bins - 1 && cum + h[b] < rank) cum += h[b++];
    *below = cum;
    return b;
}

int select_small(const float *scores, uint8_t *const *masks, const int64_t *sizes, int parts, int64_t n_prune) {
    const uint32_t *bits = (const uint32_t *)scores;
    uint32_t h[SMALL_BINS + SPREAD];
    uint32_t worst = 0;
    memset(h, 0, sizeof h);
    int64_t off = 0;
    for (int p = 0; p < parts; off += sizes[p], p++) {
        const uint8_t *mask = masks[p];
        for (int64_t i = 0; i < sizes[p]; i++) { /* pruned entries spread over SPREAD bins, as in count_digits */
            uint32_t x = bits[off + i], kept = 0u - (uint32_t)mask[i];
            worst = x > worst ? x : worst;
            /* the top 11 bits of a non-negative key; a negative score (reported below) is folded into range */
            h[(((x + 1u) >> 20) & (SMALL_BINS - 1) & kept) | ((SMALL_BINS + ((uint32_t)i & (SPREAD - 1))) & ~kept)]++;
        }
    }
    if (worst > INF_BITS) return worst < 0x80000000u ? HAS_NAN : HAS_NEGATIVE;
    for (int s = 0; s < SPREAD; s++) h[0] += h[SMALL_BINS + s];
    int64_t below;
    uint32_t top = (uint32_t)pick_bin(h, SMALL_BINS, n_prune, &below);
    int64_t rank = n_prune - below, count = h[top]; /* the k-th key is the rank-th of the count candidates */
    uint8_t **where = malloc((size_t)(count ? count : 1) * sizeof(uint8_t *));
    uint32_t *key = malloc((size_t)(count ? count : 1) * sizeof(uint32_t));
    if (!where || !key) {
        free(where);
        free(key);
        return NO_MEMORY;
    }
    int64_t c = 0;
    off = 0;
    for (int p = 0; p < parts; off += sizes[p], p++) {
        uint8_t *mask = masks[p];
        for (int64_t i = 0; i < sizes[p]; i++) {
            uint32_t k = (bits[off + i] + 1u) & (0u - (uint32_t)mask[i]);
            mask[i] = (k >> 20) > top;
            if ((k >> 20) == top) {
                where[c] = mask + i;
                key[c++] = k;
            }
        }
    }
    /* the candidates' middle 11 bits, then the low 9 bits of those sharing the k-th key's */
    uint32_t mid[SMALL_BINS], low[512];
    memset(mid, 0, sizeof mid);
    memset(low, 0, sizeof low);
    for (int64_t j = 0; j < c; j++) mid[(key[j] >> 9) & (SMALL_BINS - 1)]++;
    uint32_t m = (uint32_t)pick_bin(mid, SMALL_BINS, rank, &below);
    rank -= below;
    uint32_t prefix = (top << 11) | m;
    for (int64_t j = 0; j < c; j++)
        if ((key[j] >> 9) == prefix) low[key[j] & 511]++;
    uint32_t threshold = (prefix << 9) | (uint32_t)pick_bin(low, 512, rank, &below);
    int64_t ties_left = rank - below; /* >= 1: the k-th entry itself is pruned */
    for (int64_t j = 0; j < c; j++)
        *where[j] = key[j] > threshold || (key[j] == threshold && ties_left-- <= 0);
    free(where);
    free(key);
    return OK;
}

/*
 * Zero the pruned entries of several tensors: tensors[j] holds sizes[j]
 * elements of width[j] bytes (2, 4 or 8), masks[j] one byte each, 0 where
 * pruned. The bits are cleared, not multiplied by 0: a pruned entry becomes
 * +0.0 (or integer 0) whatever it held. One call for all the tensors
 * (LeNet-5's five gradients after every backward: five torch multiplies by
 * masks of another dtype cost several times their work); a tensor of
 * parallel_from entries or more is split over threads.
 */
#define ZERO_LOOP(T)                                                                                        \
    do {                                                                                                    \
        T *x = (T *)data;                                                                                   \
        for (int64_t i = begin; i < end; i++) x[i] &= (T)((T)0 - (T)mask[i]); /* all ones or zero */     \
    } while (0)

static void zero_range(void *data, const uint8_t *mask, int64_t begin, int64_t end, int width) {
    if (width == 4)
        ZERO_LOOP(uint32_t);
    else if (width == 2)
        ZERO_LOOP(uint16_t);
    else
        ZERO_LOOP(uint64_t);
}

void mask_zero(void *const *tensors, const uint8_t *const *masks, const int64_t *sizes, const int *width, int count,
               int threads, int64_t parallel_from) {
    for (int j = 0; j < count; j++) {
        int64_t n = sizes[j];
        if (threads <= 1 || n < parallel_from) {
            zero_range(tensors[j], masks[j], 0, n, width[j]);
            continue;
        }
#pragma omp parallel num_threads(threads)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            zero_range(tensors[j], masks[j], n * t / nt, n * (t + 1) / nt, width[j]);
        }
    }
}
