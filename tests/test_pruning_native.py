"""lib.pruning.native: the C kernels of the CPU selection against the same steps in torch operations."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

from lib.pruning import native
from lib.pruning.threshold import INF_KEY, nonnegative_keys


@pytest.fixture
def kernels():
    k = native.kernels()
    assert k is not None, "the C kernels did not build (is a C compiler installed?)"
    return k


def scores_and_mask(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, generator=g).abs() * 0.02
    scores[torch.randint(0, n, (n // 50,), generator=g)] = 0.0  # exact zeros
    special = torch.tensor([float("inf"), 0.0, 1e-38, 1e-45, 3.0])  # +inf, zero, a normal, the smallest subnormal
    scores[: min(n, 5)] = special[: min(n, 5)]
    scores[n // 2 : n // 2 + 100] = 0.5  # ties
    return scores, torch.rand(n, generator=g) > 0.3


@pytest.fixture(params=[1, 2], ids=["one-thread", "two-threads"])
def threads(request, monkeypatch):
    """Split every pass over threads, however small, to test the per-thread histograms and slices."""
    monkeypatch.setattr(native, "PARALLEL_FROM", 0)
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("n", [1, 7, 4099])
def test_histograms_count_the_digits_of_nonnegative_keys(kernels, threads, n):
    scores, mask = scores_and_mask(n)
    keys = nonnegative_keys(scores.clone(), mask).long()
    hist = native.histogram_buffer()
    kernels.histogram(scores, mask, None, hist, check=True)
    assert torch.equal(hist[: native.BINS], torch.bincount(keys >> 16, minlength=native.BINS))
    assert not hist[native.BINS :].any()  # the spare bins are left at zero
    for prefix in {int(keys[0]) >> 16, int(keys[-1]) >> 16, 0, INF_KEY >> 16}:
        low = native.histogram_buffer()
        kernels.histogram(scores, mask, prefix, low)
        assert torch.equal(low[: native.BINS], torch.bincount(keys[(keys >> 16) == prefix] & 0xFFFF, minlength=native.BINS)), prefix


def test_a_histogram_adds_to_the_counts_it_is_given(kernels):
    scores, mask = scores_and_mask(100)
    hist = native.histogram_buffer()
    kernels.histogram(scores, mask, None, hist)
    kernels.histogram(scores, mask, None, hist)
    assert int(hist.sum()) == 200


@pytest.mark.parametrize("inclusive", [False, True])
def test_keep_compares_keys_with_the_threshold_in_place_or_not(kernels, threads, inclusive):
    scores, mask = scores_and_mask(3001, seed=1)
    keys = nonnegative_keys(scores.clone(), mask)
    for threshold in [0, 1, int(keys[7]), int(keys[1500]), INF_KEY + 1]:
        expected = keys >= threshold if inclusive else keys > threshold
        assert torch.equal(kernels.keep(scores, mask, threshold, inclusive), expected)
        in_place = mask.clone()
        assert kernels.keep(scores, in_place, threshold, inclusive, out=in_place) is in_place
        assert torch.equal(in_place, expected)


@pytest.mark.parametrize("bad,message", [(float("nan"), "NaN"), (-2.0, "negative"), (-0.0, "negative")])
def test_nan_and_negative_scores_are_errors_when_checked(kernels, threads, bad, message):
    scores, mask = scores_and_mask(1000)
    scores[-1] = bad
    hist = native.histogram_buffer()
    with pytest.raises(ValueError, match=message):
        kernels.histogram(scores, mask, None, hist, check=True)
    kernels.histogram(scores, mask, None, hist, check=False)  # the later passes skip the check


def test_wrong_inputs_are_refused_before_the_kernel_reads_them(kernels):
    scores, mask = scores_and_mask(10)
    hist = native.histogram_buffer()
    with pytest.raises(TypeError, match="float32"):
        kernels.histogram(scores.double(), mask, None, hist)
    with pytest.raises(ValueError, match="same size"):
        kernels.histogram(scores, mask[:5], None, hist)
    with pytest.raises(ValueError, match="contiguous"):
        kernels.keep(scores.view(2, 5).t(), mask.view(2, 5).t(), 1, False)
    with pytest.raises(ValueError, match="int64"):
        kernels.histogram(scores, mask, None, torch.zeros(native.BINS, dtype=torch.int64))


def test_builds_once_per_source_and_rebuilds_a_changed_one(tmp_path):
    sources = tuple(tmp_path / s.name for s in native.SOURCES)
    for copy, original in zip(sources, native.SOURCES):
        copy.write_bytes(original.read_bytes())
    first = native.build(sources, tmp_path / "cache")
    assert first.exists() and native.build(sources, tmp_path / "cache") == first
    sources[-1].write_text(sources[-1].read_text() + "\n/* changed */\n")
    second = native.build(sources, tmp_path / "cache")
    assert second != first and second.exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([first.name, second.name])  # no temporaries left


def test_without_a_compiler_or_when_switched_off_there_are_no_kernels(tmp_path, monkeypatch):
    native._loaded.cache_clear()
    try:
        monkeypatch.setenv("PRUNING_NATIVE", "0")
        assert native.kernels() is None
        native._loaded.cache_clear()
        monkeypatch.delenv("PRUNING_NATIVE")
        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        with pytest.warns(RuntimeWarning, match="C kernels unavailable"):
            assert native.kernels() is None
    finally:
        native._loaded.cache_clear()


def test_disabled_blocks_switch_the_kernels_off_for_their_duration(kernels):
    with native.disabled():
        with native.disabled():
            assert native.kernels() is None
        assert native.kernels() is None
    assert native.kernels() is kernels


def test_split_settles_all_but_the_candidates_and_records_them_in_order(kernels, threads):
    scores, mask = scores_and_mask(5000, seed=2)
    keys = nonnegative_keys(scores.clone(), mask)
    for prefix in [int(keys[n]) >> 16 for n in (0, 2500, 4999)] + [0x7FFF]:  # the last: no candidates
        candidates = ((keys >> 16) == prefix).nonzero().flatten()
        index = torch.empty(candidates.numel(), dtype=torch.int64)
        key = torch.empty(candidates.numel(), dtype=torch.int32)
        out = mask.clone()
        assert kernels.split(scores, out, prefix, out, index, key) == candidates.numel()  # in place: out is the mask
        assert torch.equal(index, candidates) and torch.equal(key, keys[candidates])
        assert torch.equal(out, (keys >> 16) > prefix)
        if candidates.numel():
            with pytest.raises(ValueError, match="candidates"):
                kernels.split(scores, mask, prefix, torch.empty_like(mask), index[:-1], key[:-1])


def reference_prune(scores, masks, n_prune):
    """The masks pruning the n_prune lowest keys of the concatenation, ties in flat order (a stable sort)."""
    keys = nonnegative_keys(scores.clone(), torch.cat([m.reshape(-1) for m in masks]))
    keep = torch.ones(keys.numel(), dtype=torch.bool)
    keep[torch.sort(keys, stable=True).indices[:n_prune]] = False
    return keep


@pytest.mark.parametrize("sizes", [[1], [7, 0, 3], [150, 2400, 48000, 10080, 840]], ids=["one", "with-empty", "lenet5"])
def test_select_small_prunes_the_lowest_keys_in_place_ties_in_order(kernels, sizes):
    n = sum(sizes)
    scores, flat = scores_and_mask(n, seed=3)
    scores[n // 3 : n // 3 + n // 10] = 0.25  # a tenth of all keys tie (one 11-bit bin, one middle bin, one key)
    kept = int(flat.sum())
    for n_prune in sorted({1, n - kept + 1, (n + n - kept) // 2, n - 1, n} - {0}):
        if not n - kept <= n_prune <= n or n_prune < 1:
            continue
        masks = [m.clone() for m in flat.split(sizes)]
        kernels.select_small(scores, masks, n_prune)
        assert torch.equal(torch.cat(masks), reference_prune(scores, flat.split(sizes), n_prune)), n_prune


def test_select_small_refuses_nan_negative_and_wrong_inputs(kernels):
    scores, mask = scores_and_mask(100)
    masks = list(mask.clone().split([60, 40]))
    for bad, message in [(float("nan"), "NaN"), (-0.0, "negative")]:
        spoiled = scores.clone()
        spoiled[77] = bad
        with pytest.raises(ValueError, match=message):
            kernels.select_small(spoiled, masks, 50)
    with pytest.raises(ValueError, match="cannot prune 0"):
        kernels.select_small(scores, masks, 0)
    with pytest.raises(ValueError, match="for masks of 60"):
        kernels.select_small(scores, masks[:1], 5)
    with pytest.raises(TypeError, match="bool masks"):
        kernels.select_small(scores, [mask.view(10, 10).t()], 5)
    with pytest.raises(TypeError, match="float32"):
        kernels.select_small(scores.double(), masks, 5)


def test_zero_clears_the_pruned_entries_of_every_width_and_leaves_the_rest(kernels, threads):
    gen = torch.Generator().manual_seed(5)
    tensors = [torch.randn(40, 3, generator=gen).to(dtype) for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)]
    tensors.append(torch.randint(-100, 100, (77,), generator=gen, dtype=torch.int32))
    tensors[0][0, 0], tensors[0][1, 0] = float("nan"), -3.0
    masks = [torch.rand(t.shape, generator=gen) > 0.4 for t in tensors]
    masks[0][0, 0] = masks[0][1, 0] = False  # NaN and a negative entry pruned: +0.0 either way
    before = [t.clone() for t in tensors]
    assert kernels.zero(tensors, [m.view(torch.uint8) if i % 2 else m for i, m in enumerate(masks)])
    for t, b, m in zip(tensors, before, masks):
        assert torch.equal(t[m], b[m])  # kept entries untouched
        assert not t[~m].view(torch.uint8 if t.element_size() == 1 else {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]).any()


def test_zero_declines_what_it_cannot_take_and_changes_nothing(kernels):
    t, m = torch.randn(6, 4), torch.rand(6, 4) > 0.5
    for tensors, masks in [([t, t.t()], [m, m.t()]), ([t], [m[:3]]), ([t.bool()], [m]), ([t], [m.float()])]:
        before = [x.clone() for x in tensors]
        assert not kernels.zero(tensors, masks)
        assert all(torch.equal(x, b) for x, b in zip(tensors, before))


def test_prepared_masks_zero_tensor_after_tensor_and_decline_what_does_not_fit(kernels):
    """zero_prepared reads only the tensors per call: fresh tensors each time, as gradients after backward."""
    gen = torch.Generator().manual_seed(6)
    masks = [torch.rand(s, generator=gen) > 0.5 for s in [(8, 3), (5,), (2, 2, 2)]]
    prepared = native.PreparedMasks.of([masks[0], masks[1].view(torch.uint8), masks[2]])
    assert prepared is not None and prepared.count == 3
    for dtype in (torch.float32, torch.bfloat16, torch.float64):  # the same masks for tensors of another width
        tensors = [torch.randn(m.shape, generator=gen).to(dtype) for m in masks]
        expected = [t * m for t, m in zip(tensors, masks)]
        assert kernels.zero_prepared(tensors, prepared)
        assert all(torch.equal(t, e) for t, e in zip(tensors, expected))
    t = [torch.randn(m.shape, generator=gen) for m in masks]
    declined = [[t[0], None, t[2]], t[:2], [t[0], torch.randn(6, generator=gen), t[2]], [torch.randn(3, 8).t(), t[1], t[2]],
                [t[0].bool(), t[1], t[2]]]
    for tensors in declined:
        before = [x.clone() if x is not None else None for x in tensors]
        assert not kernels.zero_prepared(tensors, prepared)
        assert all(b is None or torch.equal(x, b) for x, b in zip(tensors, before))  # nothing changed
    assert native.PreparedMasks.of([masks[0].t()]) is None  # not contiguous
    assert native.PreparedMasks.of([masks[0].float()]) is None  # not one byte per entry


SANITIZED_DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int select_histogram(const float *, const uint8_t *, int64_t, int64_t, int, int64_t *, int);
int select_small(const float *, uint8_t *const *, const int64_t *, int, int64_t);
void mask_zero(void *const *, const uint8_t *const *, const int64_t *, const int *, int, int, int64_t);
void state_scores(int, const float *, const float *, const float *, float, float, float *, int64_t, int, int64_t);

int main(void) {
    enum { N = 3000 };
    /* a tiny negative, -1, -0.0, a negative NaN (x86's default NaN), a positive NaN, +inf, an ordinary score */
    const uint32_t bad[] = {0x80800001u, 0xBF800000u, 0x80000000u, 0xFFC00000u, 0x7FC00000u, 0x7F800000u, 0x3C000000u};
    float *s = malloc(N * sizeof(float)), *w = malloc(N * sizeof(float)), *out = malloc(N * sizeof(float));
    uint8_t *m = malloc(N);
    int64_t *hist = calloc(65536 + 8, sizeof(int64_t));
    for (int b = 0; b < 7; b++) {
        for (int i = 0; i < N; i++) {
            uint32_t x = i % 3 ? bad[b] : 0x3C000000u + (uint32_t)i * 977u; /* mixed with ordinary scores */
            memcpy(s + i, &x, 4);
            m[i] = i % 5 != 0;
        }
        uint8_t *masks[2] = {m, m + 1000};
        int64_t sizes[2] = {1000, N - 1000};
        memset(hist, 0, (65536 + 8) * sizeof(int64_t));
        int h = select_histogram(s, m, N, -1, 1, hist, 2);
        printf("%d %d ", select_small(s, masks, sizes, 2, N / 2), h);
    }
    for (int i = 0; i < N; i++) w[i] = (float)(i % 7) - 3.0f;
    void *tensors[1] = {w};
    const uint8_t *zmasks[1] = {m};
    int64_t zsizes[1] = {N};
    int width[1] = {4};
    mask_zero(tensors, zmasks, zsizes, width, 1, 2, 0);
    for (int form = 0; form < 4; form++) state_scores(form, w, s, s, 2.5f, 1e-8f, out, N, 2, 0);
    printf("\n");
    return 0;
}
"""


def test_kernels_stay_within_their_buffers_for_scores_they_reject(tmp_path):
    """Built with AddressSanitizer, every kernel reads and writes only its buffers, NaN and negative scores included.

    A negative score once indexed past select_small's 2056-entry histogram
    (up to 4095) before the kernel reported it: the sanitizer, not a wrong
    result, is what shows that.
    """
    driver, exe = tmp_path / "driver.c", tmp_path / "driver"
    driver.write_text(SANITIZED_DRIVER)
    flags = ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-fopenmp", "-fno-math-errno"]
    built = subprocess.run([os.environ.get("CC", "cc"), *flags, str(driver), *map(str, native.SOURCES), "-o", str(exe)],
                           capture_output=True, text=True, timeout=120)
    if built.returncode:
        pytest.skip(f"no AddressSanitizer build here: {built.stderr.strip()[-300:]}")
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert ran.returncode == 0 and "AddressSanitizer" not in ran.stderr, ran.stderr[-2000:]
    # (select_small, select_histogram) per bad value: 2 = negative, 1 = NaN, 0 = fine
    assert ran.stdout.split() == ["2", "2", "2", "2", "2", "2", "2", "2", "1", "1", "0", "0", "0", "0"]
