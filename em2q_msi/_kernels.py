"""Numba kernels behind preprocess, peaks, ion_images and qc (private; use those modules).

One per-spectrum routine (``_chain_one``: smooth → baseline → normalise → noise → peaks) runs in
cache on scratch buffers, so a whole chain costs one pass over memory; two drivers run it over the
rows of a continuous block or the CSR segments of a processed one. Every kernel releases the GIL
and works on a range of spectra; ``preprocess._run_chain`` and ``over_spectra`` hand such ranges
to a thread pool one at a time (dynamic scheduling on all cores, robust to a core shared with
another process, and much quicker to compile than numba's ``parallel=True``).
Intensities are processed in float32 (the precision imzML files store), m/z in float64.
Kernels are compiled with ``cache=True`` so the JIT cost is paid once per machine.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

SMOOTH_NONE, SMOOTH_HAT, SMOOTH_REFLECT = 0, 1, 2
BASELINE_NONE, BASELINE_TOPHAT, BASELINE_SNIP = 0, 1, 2
NORM_NONE, NORM_TIC, NORM_RMS, NORM_MEDIAN = 0, 1, 2, 3
NOISE_MAD, NOISE_STD = 0, 1

_MAD_TO_SIGMA = 1.4826


@nb.njit(cache=True, nogil=True)
def _reflect(i: int, n: int) -> int:
    # scipy.ndimage "reflect": (d c b a | a b c d | d c b a), period 2n
    i = i % (2 * n)
    if i >= n:
        i = 2 * n - 1 - i
    return i


_TILE = 2048  # points per tile: a tile of input and output stays in L1 across the filter taps
NOISE_SAMPLE_POINTS = 2048  # at most this many evenly spaced points enter the noise estimate
RELATIVE_ZERO = 1e-6  # intensities below this fraction of a spectrum's maximum count as zeros


@nb.njit(cache=True, nogil=True)
def _scale(c, x, out):
    for i in range(x.shape[0]):
        out[i] = c * x[i]


@nb.njit(cache=True, nogil=True)
def _axpy2(c, x1, x2, out):
    for i in range(x1.shape[0]):
        out[i] += c * (x1[i] + x2[i])


@nb.njit(cache=True, nogil=True)
def _clip_negative(x):
    for i in range(x.shape[0]):
        x[i] = x[i] if x[i] > 0.0 else np.float32(0.0)


@nb.njit(cache=True, nogil=True)
def _smooth_one(y, out, coeffs, edges, mode):
    n = y.shape[0]
    w = coeffs.shape[0]
    h = w // 2
    if mode == SMOOTH_NONE or n == 0 or (mode == SMOOTH_HAT and n < w):
        for i in range(n):
            out[i] = y[i]
        return
    m = n - 2 * h
    # interior, tile by tile, taps outermost: each inner loop is a contiguous axpy (SIMD)
    for t0 in range(0, max(m, 0), _TILE):
        t = min(_TILE, m - t0)
        o = out[h + t0 : h + t0 + t]
        # kernels are symmetric (the caller makes sure): fold the taps pairwise
        _scale(coeffs[h], y[t0 + h : t0 + h + t], o)
        for k in range(h):
            _axpy2(coeffs[k], y[t0 + k : t0 + k + t], y[t0 + w - 1 - k : t0 + w - 1 - k + t], o)
        _clip_negative(o)
    left = min(h, n)
    for j in range(left):
        out[j] = _edge_value(y, j, coeffs, edges, mode)
    for j in range(max(n - h, left), n):
        out[j] = _edge_value(y, j, coeffs, edges, mode)


@nb.njit(cache=True, nogil=True)
def _edge_value(y, j, coeffs, edges, mode):
    """Smoothed value at j within half a window of an end (fit on the end window, or reflect)."""
    n = y.shape[0]
    w = coeffs.shape[0]
    h = w // 2
    s = np.float32(0.0)
    if mode == SMOOTH_HAT:
        if j < h:
            for k in range(w):
                s += edges[j, k] * y[k]
        else:
            r = w - (n - j)
            for k in range(w):
                s += edges[r, k] * y[n - w + k]
    else:
        for k in range(w):
            s += coeffs[k] * y[_reflect(j - h + k, n)]
    return s if s > 0.0 else np.float32(0.0)


@nb.njit(cache=True, nogil=True)
def _min3_pass(src, dst, s1, s2, length):
    """dst[i] = min(src[i], src[i + s1], src[i + s2]) for i < length."""
    a = src[:length]
    b = src[s1 : s1 + length]
    c = src[s2 : s2 + length]
    d = dst[:length]
    for i in range(length):
        m = a[i] if a[i] < b[i] else b[i]
        d[i] = m if m < c[i] else c[i]


@nb.njit(cache=True, nogil=True)
def _max3_pass(src, dst, s1, s2, length):
    """dst[i] = max(src[i], src[i + s1], src[i + s2]) for i < length."""
    a = src[:length]
    b = src[s1 : s1 + length]
    c = src[s2 : s2 + length]
    d = dst[:length]
    for i in range(length):
        m = a[i] if a[i] > b[i] else b[i]
        d[i] = m if m > c[i] else c[i]


@nb.njit(cache=True, nogil=True)
def _running_extreme(x, w, out, p, q, is_max):
    """min (or max) of x over the centred window of w points, truncated at the ends.

    Window tripling on padded copies ``p``/``q`` (ping-pong): after k passes the current buffer
    holds at ``i`` the extreme of the 3**k points from ``i``, and a window of w points is covered
    by two or three overlapping such spans (101 points: 4 passes and a final one). Every pass is
    a contiguous, branch-free loop that vectorises, which beats van Herk's 3 comparisons per
    point, a serial dependency chain, in practice.
    """
    n = x.shape[0]
    h = w // 2
    m = n + 2 * h
    fill = np.float32(-np.inf) if is_max else np.float32(np.inf)
    p[:h] = fill
    p[h + n : m] = fill
    p[h : h + n] = x
    span = 1
    length = m
    flip = False
    while 3 * span <= w:
        length -= 2 * span
        src, dst = (q, p) if flip else (p, q)
        if is_max:
            _max3_pass(src, dst, span, 2 * span, length)
        else:
            _min3_pass(src, dst, span, 2 * span, length)
        flip = not flip
        span *= 3
    src = q if flip else p
    # spans starting at 0, middle (if two do not reach) and w - span cover [0, w)
    middle = w - span if 2 * span >= w else span
    if is_max:
        _max3_pass(src, out, middle, w - span, n)
    else:
        _min3_pass(src, out, middle, w - span, n)


@nb.njit(cache=True, nogil=True)
def _baseline_one(y, out, mode, window, iterations, base, p, q):
    """out = y minus its baseline (top-hat opening or SNIP), never negative.

    ``base`` receives the baseline; ``p``/``q`` are scratch. The erosion is parked in ``out``,
    which is free until the end, so the whole chain fits in fewer cache-resident buffers.
    """
    n = y.shape[0]
    if mode == BASELINE_NONE or n == 0:
        for i in range(n):
            out[i] = y[i]
        return
    if mode == BASELINE_TOPHAT:
        _running_extreme(y, window, out, p, q, False)
        _running_extreme(out, window, base, p, q, True)
    else:
        for i in range(n):
            base[i] = y[i]
        for k in range(1, iterations + 1):
            for i in range(n):
                p[i] = base[i]
            for i in range(k, n - k):
                a = np.float32(0.5) * (p[i - k] + p[i + k])
                if a < p[i]:
                    base[i] = a
    for i in range(n):
        v = y[i] - base[i]
        out[i] = v if v > 0.0 else np.float32(0.0)


@nb.njit(cache=True, nogil=True, fastmath=True)
def _normalise_one(y, mode, buf):
    n = y.shape[0]
    if mode == NORM_NONE or n == 0:
        return
    factor = 0.0
    if mode == NORM_TIC:
        for i in range(n):
            factor += y[i]
    elif mode == NORM_RMS:
        for i in range(n):
            factor += float(y[i]) * float(y[i])
        factor = math.sqrt(factor / n)
    else:
        cnt = 0
        for i in range(n):
            if y[i] > 0.0:
                buf[cnt] = y[i]
                cnt += 1
        if cnt > 0:
            factor = _median_inplace(buf, cnt)
    if factor > 0.0:
        inv = np.float32(1.0 / factor)
        for i in range(n):
            y[i] *= inv


@nb.njit(cache=True, nogil=True)
def _partition_below(buf, lo, hi, pivot, strict):
    """Move buf[lo:hi] values < pivot (<= when not strict) to the front; returns their end.

    Branch-free Lomuto: every element is swapped and the boundary advances by the comparison,
    so there are no mispredicted branches on random data.
    """
    j = lo
    for i in range(lo, hi):
        v = buf[i]
        buf[i] = buf[j]
        buf[j] = v
        j += (v < pivot) if strict else (v <= pivot)
    return j


@nb.njit(cache=True, nogil=True)
def _select_inplace(buf, cnt, k):
    """The k-th smallest of buf[:cnt] (reorders it): quickselect, median-of-three pivots."""
    lo, hi = 0, cnt  # the answer lies in buf[lo:hi]
    while hi - lo > 1:
        a, b, c = buf[lo], buf[(lo + hi) // 2], buf[hi - 1]
        pivot = max(min(a, b), min(max(a, b), c))
        j = _partition_below(buf, lo, hi, pivot, True)
        if k < j:
            hi = j
            continue
        if j > lo:
            lo = j
            continue
        # the pivot is the range's minimum: gather the values equal to it (duplicates end here)
        e = _partition_below(buf, j, hi, pivot, False)
        if k < e:
            return float(pivot)
        lo = e
    return float(buf[lo])


@nb.njit(cache=True, nogil=True)
def _median_inplace(buf, cnt):
    """Median of buf[:cnt] (reorders it); the mean of the two middle values for even counts."""
    upper = _select_inplace(buf, cnt, cnt // 2)
    if cnt % 2 == 1:
        return upper
    # after the selection every value left of position cnt // 2 is <= upper
    lower = buf[0]
    for i in range(1, cnt // 2):
        lower = lower if lower > buf[i] else buf[i]
    return 0.5 * (float(lower) + upper)


@nb.njit(cache=True, nogil=True)
def _noise_one(y, mode, buf):
    """(floor, noise) from the positive intensities among at most NOISE_SAMPLE_POINTS evenly
    spaced points: median and 1.4826·MAD, or mean and standard deviation."""
    n = y.shape[0]
    stride = max(1, (n + NOISE_SAMPLE_POINTS - 1) // NOISE_SAMPLE_POINTS)
    top = np.float32(0.0)
    for i in range(0, n, stride):
        top = top if top > y[i] else y[i]
    # values below float32 round-off of the (sampled) maximum count as zeros
    tiny = top * np.float32(RELATIVE_ZERO)
    cnt = 0
    for i in range(0, n, stride):
        if y[i] > tiny:
            buf[cnt] = y[i]
            cnt += 1
    if cnt == 0:
        return 0.0, 0.0
    if mode == NOISE_STD:
        mean = 0.0
        for i in range(cnt):
            mean += buf[i]
        mean /= cnt
        var = 0.0
        for i in range(cnt):
            var += (buf[i] - mean) ** 2
        return mean, math.sqrt(var / cnt)
    med = _median_inplace(buf, cnt)
    for i in range(cnt):
        buf[i] = abs(buf[i] - med)
    return med, _MAD_TO_SIGMA * _median_inplace(buf, cnt)


#: the most a 3-point Gaussian fit may raise a peak above its highest sample, in log units
#: (4x: a Gaussian sampled at one FWHM spacing peaks at most 2x above its highest sample)
_MAX_LOG_RISE = math.log(4.0)


@nb.njit(cache=True, nogil=True)
def _apex(mz, y, i):
    """Centroid m/z and height of the maximum at i: 3-point Gaussian fit (parabola in log y).

    In log space relative to the apex, so two logarithms suffice; a plain parabola on y when a
    neighbour is zero.
    """
    x0 = mz[i - 1] - mz[i]
    x2 = mz[i + 1] - mz[i]
    y1 = float(y[i])
    if x0 == 0.0 or x2 == 0.0 or x0 == x2:
        return mz[i], y1
    gaussian = y[i - 1] > 0.0 and y[i + 1] > 0.0
    if gaussian:  # float32 logarithms: the data's own precision, twice as fast
        d0 = float(math.log(y[i - 1] / y[i]))
        d2 = float(math.log(y[i + 1] / y[i]))
    else:
        d0, d2 = float(y[i - 1]) - y1, float(y[i + 1]) - y1
    a = (d0 / x0 - d2 / x2) / (x0 - x2)
    b = d0 / x0 - a * x0
    if a >= 0.0:
        return mz[i], y1
    xv = min(max(-b / (2.0 * a), x0), x2)
    dv = b * xv + a * xv * xv
    if gaussian and dv > _MAX_LOG_RISE:
        # unevenly spaced neighbours (centroided data) can make the log-parabola's vertex
        # absurd, up to overflow: beyond 4x the apex the fit is not a peak shape, keep the apex
        return mz[i], y1
    return mz[i] + xv, (y1 * math.exp(dv) if gaussian else y1 + dv)


@nb.njit(cache=True, nogil=True)
def _maxima_mask(y, limit, mask):
    """mask[i] = 1 where y[i] is a local maximum (> left, >= right) at or above limit and > 0.

    Branch-free, so it vectorises; the caller then only visits the few flagged points.
    """
    n = y.shape[0]
    mask[0] = 0
    mask[n - 1] = 0
    left = y[: n - 2]
    mid = y[1 : n - 1]
    right = y[2:]
    m = mask[1 : n - 1]
    for i in range(n - 2):
        v = mid[i]
        m[i] = (v >= limit) & (v > left[i]) & (v >= right[i]) & (v > 0.0)


@nb.njit(cache=True, nogil=True)
def _peaks_one(mz, y, floor, noise, snr_threshold, min_distance, mask, pk_mz, pk_int, pk_snr):
    n = y.shape[0]
    if n < 3:
        return 0
    count = 0
    last = -(1 << 30)
    limit = floor + snr_threshold * noise
    flags = mask.view(np.uint8)  # one byte per point, read back 32 at a time
    _maxima_mask(y, limit, flags)
    n_words = 4 * ((n + 31) // 32)
    flags[n : 8 * n_words] = 0
    words = mask.view(np.uint64)
    for w in range(0, n_words, 4):
        if (words[w] | words[w + 1] | words[w + 2] | words[w + 3]) == 0:
            continue  # most stretches of 32 points: one predictable branch
        for i in range(8 * w, 8 * w + 32):
            if flags[i] != 0:
                count, last = _record_peak(
                    mz, y, i, floor, noise, min_distance, pk_mz, pk_int, pk_snr, count, last
                )
    return count


@nb.njit(cache=True, nogil=True, inline="always")
def _record_peak(mz, y, i, floor, noise, min_distance, pk_mz, pk_int, pk_snr, count, last):
    """Store the maximum at i (or let it replace a lower one closer than min_distance)."""
    if count > 0 and i - last < min_distance:
        if y[i] <= y[last]:
            return count, last
        count -= 1
    c_mz, c_int = _apex(mz, y, i)
    pk_mz[count] = c_mz
    pk_int[count] = c_int
    pk_snr[count] = (c_int - floor) / noise if noise > 0.0 else np.inf
    return count + 1, i


def work_size(longest: int, window_points: int, n_coeffs: int) -> int:
    """float32 scratch for spectra of up to ``longest`` points: 5 buffers with window padding.

    Each buffer's length is a multiple of 16, so every buffer is 8-byte aligned (the peak scan
    reads its flags as 64-bit words).
    """
    return 5 * (-(-(longest + 3 * max(window_points, n_coeffs) + 32) // 16) * 16)


@nb.njit(cache=True, nogil=True)
def _chain_one(mz, y, out, write_out, work, cfg_i, cfg_f, coeffs, edges, pk_mz, pk_int, pk_snr):
    """Whole chain on one spectrum; returns (n_peaks, floor, noise).

    The result is written to ``out`` when ``write_out``, else kept in ``work`` (never leaves the
    cache). ``work`` is reused from spectrum to spectrum: allocating it per spectrum costs page
    faults that take longer than the filters.
    """
    smooth_mode, base_mode, base_window, snip_iter, norm_mode = (
        cfg_i[0],
        cfg_i[1],
        cfg_i[2],
        cfg_i[3],
        cfg_i[4],
    )
    noise_mode, do_noise, do_pick, min_distance = cfg_i[5], cfg_i[6], cfg_i[7], cfg_i[8]
    snr_threshold = cfg_f[0]
    n = y.shape[0]
    pad = work.shape[0] // 5
    a, base = work[:n], work[pad : 2 * pad]
    p, q = work[2 * pad : 3 * pad], work[3 * pad : 4 * pad]
    result = out if write_out else work[4 * pad : 4 * pad + n]
    _smooth_one(y, a, coeffs, edges, smooth_mode)
    _baseline_one(a, result, base_mode, base_window, snip_iter, base, p, q)
    _normalise_one(result, norm_mode, p)
    floor, noise = 0.0, 0.0
    if do_noise:
        floor, noise = _noise_one(result, noise_mode, p)
    count = 0
    if do_pick:
        count = _peaks_one(
            mz,
            result,
            floor,
            noise,
            snr_threshold,
            min_distance,
            q,
            pk_mz,
            pk_int,
            pk_snr,
        )
    return count, floor, noise


@nb.njit(cache=True, nogil=True)
def chain_dense(
    mz,
    inten,
    out,
    write_out,
    cfg_i,
    cfg_f,
    coeffs,
    edges,
    cap,
    work,
    pk_mz,
    pk_int,
    pk_snr,
    counts,
    floors,
    noises,
):
    """Chain over the rows of a 2-D block, peaks written one spectrum after another.

    Stops before a spectrum whose ``cap`` peak slots might not fit; returns the number of spectra
    done (the caller empties the peak buffers and calls again with the rest).
    """
    pos = 0
    for s in range(inten.shape[0]):
        if pos + cap > pk_mz.shape[0]:
            return s
        c, f, z = _chain_one(
            mz,
            inten[s],
            out[s] if write_out else out[0],
            write_out,
            work,
            cfg_i,
            cfg_f,
            coeffs,
            edges,
            pk_mz[pos : pos + cap],
            pk_int[pos : pos + cap],
            pk_snr[pos : pos + cap],
        )
        counts[s] = c
        floors[s] = f
        noises[s] = z
        pos += c
    return inten.shape[0]


@nb.njit(cache=True, nogil=True)
def chain_ragged(
    mz,
    inten,
    offsets,
    out,
    write_out,
    cfg_i,
    cfg_f,
    coeffs,
    edges,
    cap,
    work,
    pk_mz,
    pk_int,
    pk_snr,
    counts,
    floors,
    noises,
):
    """Chain over the CSR segments of a processed block; as ``chain_dense`` otherwise."""
    pos = 0
    for s in range(offsets.shape[0] - 1):
        if pos + cap > pk_mz.shape[0]:
            return s
        lo, hi = offsets[s], offsets[s + 1]
        c, f, z = _chain_one(
            mz[lo:hi],
            inten[lo:hi],
            out[lo:hi] if write_out else out[:0],
            write_out,
            work,
            cfg_i,
            cfg_f,
            coeffs,
            edges,
            pk_mz[pos : pos + cap],
            pk_int[pos : pos + cap],
            pk_snr[pos : pos + cap],
        )
        counts[s] = c
        floors[s] = f
        noises[s] = z
        pos += c
    return offsets.shape[0] - 1


def over_spectra(n_spectra: int, work, n_threads: int | None = None, batch: int = 256) -> None:
    """Call ``work(start, stop)`` for consecutive ranges of spectra on a pool of threads.

    The kernels it calls release the GIL; ranges are taken one at a time (dynamic scheduling).
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    threads = n_threads or max(1, len(os.sched_getaffinity(0)))
    starts = range(0, n_spectra, batch)
    if threads == 1 or len(starts) <= 1:
        for start in starts:
            work(start, min(start + batch, n_spectra))
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda start: work(start, min(start + batch, n_spectra)), starts))


@nb.njit(cache=True, nogil=True)
def window_sums_dense(inten, lo, hi, out):
    """out[s, k] = sum(inten[s, lo[k]:hi[k]]) in float64."""
    for s in range(inten.shape[0]):
        row = inten[s]
        for k in range(lo.shape[0]):
            acc = 0.0
            for j in range(lo[k], hi[k]):
                acc += row[j]
            out[s, k] = acc


@nb.njit(cache=True, nogil=True)
def _bounds_lockstep(m, lower, upper, lo, hi):
    """lo[k] = searchsorted(m, lower[k], "left"), hi[k] = searchsorted(m, upper[k], "right").

    All binary searches advance together, one halving step at a time: the loads of one step are
    independent, so their cache misses overlap instead of queueing one search after another.
    """
    n = m.shape[0]
    n_win = lower.shape[0]
    for k in range(n_win):
        lo[k] = 0
        hi[k] = 0
    if n == 0:
        return
    while n > 1:
        half = n // 2
        for k in range(n_win):
            b = lo[k]
            lo[k] = b + half if m[b + half] < lower[k] else b
        for k in range(n_win):
            b = hi[k]
            hi[k] = b + half if m[b + half] <= upper[k] else b
        n -= half
    for k in range(n_win):
        lo[k] += m[lo[k]] < lower[k]
        hi[k] += m[hi[k]] <= upper[k]


@nb.njit(cache=True, nogil=True)
def window_sums_ragged(mz, inten, offsets, lower, upper, out):
    """out[s, k] = sum of spectrum s's intensities with lower[k] <= m/z <= upper[k], float64.

    ``offsets`` index into ``mz``/``inten``, one more than the rows of ``out``.
    """
    lo = np.empty(lower.shape[0], np.int64)
    hi = np.empty(lower.shape[0], np.int64)
    for s in range(offsets.shape[0] - 1):
        a, b = offsets[s], offsets[s + 1]
        _bounds_lockstep(mz[a:b], lower, upper, lo, hi)
        for k in range(lower.shape[0]):
            acc = 0.0
            for j in range(a + lo[k], a + hi[k]):
                acc += inten[j]
            out[s, k] = acc


@nb.njit(cache=True, nogil=True)
def exact_sum(x):
    """Correctly rounded float64 sum of finite values: CPython's ``math.fsum`` (Shewchuk)."""
    partials = np.empty(128, np.float64)
    n = 0
    for v in x:
        xx = float(v)
        i = 0
        for j in range(n):
            y = partials[j]
            if abs(xx) < abs(y):
                xx, y = y, xx
            hi = xx + y
            lo = y - (hi - xx)
            if lo != 0.0:
                partials[i] = lo
                i += 1
            xx = hi
        partials[i] = xx
        n = i + 1
    if n == 0:
        return 0.0
    n -= 1
    hi = partials[n]
    lo = 0.0
    while n > 0:
        xx = hi
        n -= 1
        y = partials[n]
        hi = xx + y
        lo = y - (hi - xx)
        if lo != 0.0:
            break
    if n > 0 and ((lo < 0.0 and partials[n - 1] < 0.0) or (lo > 0.0 and partials[n - 1] > 0.0)):
        y = lo * 2.0
        xx = hi + y
        if y == xx - hi:
            hi = xx
    return hi


@nb.njit(cache=True, nogil=True)
def basic_metrics_ragged(inten, offsets, tic, arg, nnz):
    """Per spectrum: TIC (exact float64 sum), index of the base peak (-1 if empty), non-zeros."""
    for s in range(offsets.shape[0] - 1):
        best = -np.inf
        cnt = 0
        arg[s] = -1
        for j in range(offsets[s], offsets[s + 1]):
            v = inten[j]
            if v != 0:
                cnt += 1
            if v > best:
                best = v
                arg[s] = j
        tic[s] = exact_sum(inten[offsets[s] : offsets[s + 1]])
        nnz[s] = cnt


@nb.njit(cache=True, nogil=True)
def exact_row_sums(inten, out):
    """Exact float64 sum of each row of a 2-D block."""
    for s in range(inten.shape[0]):
        out[s] = exact_sum(inten[s])
