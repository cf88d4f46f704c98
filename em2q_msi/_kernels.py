"""Numba kernels behind preprocess, peaks, ion_images and qc (private; use those modules).

One per-spectrum routine (``_chain_one``: smooth → baseline → normalise → noise → peaks) runs in
cache on scratch buffers, so a whole chain costs one pass over memory; two ``prange`` drivers run
it over the rows of a continuous block or the CSR segments of a processed one, on all cores.
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
        for i in range(t):
            o[i] = 0.0
        for k in range(w):
            c = coeffs[k]
            yk = y[t0 + k : t0 + k + t]
            for i in range(t):
                o[i] += c * yk[i]
        for i in range(t):
            if o[i] < 0.0:
                o[i] = 0.0
    for j in range(n):
        if h <= j < n - h:
            continue
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
        out[j] = s if s > 0.0 else np.float32(0.0)


@nb.njit(cache=True, nogil=True)
def _running_extreme(x, w, out, p, q, is_max):
    """min (or max) of x over the centred window of w points, truncated at the ends.

    Window doubling on padded copies ``p``/``q`` (ping-pong): after k passes the current buffer
    holds at ``i`` the extreme of the 2**k points from ``i``, and a window of w points is covered
    by two overlapping such spans. Every pass is a contiguous, branch-free loop that vectorises,
    which beats van Herk's 3 comparisons per point, a serial dependency chain, in practice.
    """
    n = x.shape[0]
    h = w // 2
    m = n + 2 * h
    fill = np.float32(-np.inf) if is_max else np.float32(np.inf)
    for j in range(h):
        p[j] = fill
        p[h + n + j] = fill
    for j in range(n):
        p[h + j] = x[j]
    span = 1
    length = m
    src, dst = p, q
    while 2 * span <= w:
        length -= span
        a = src[:length]
        b = src[span : span + length]
        d = dst[:length]
        if is_max:
            for i in range(length):
                d[i] = a[i] if a[i] > b[i] else b[i]
        else:
            for i in range(length):
                d[i] = a[i] if a[i] < b[i] else b[i]
        src, dst = dst, src
        span *= 2
    a = src[:n]
    b = src[w - span : w - span + n]
    if is_max:
        for i in range(n):
            out[i] = a[i] if a[i] > b[i] else b[i]
    else:
        for i in range(n):
            out[i] = a[i] if a[i] < b[i] else b[i]


@nb.njit(cache=True, nogil=True)
def _baseline_one(y, out, mode, window, iterations, s1, s2, p, g, hb):
    """out = y minus its baseline (top-hat opening or SNIP), never negative."""
    n = y.shape[0]
    if mode == BASELINE_NONE or n == 0:
        for i in range(n):
            out[i] = y[i]
        return
    if mode == BASELINE_TOPHAT:
        _running_extreme(y, window, s1, p, g, False)
        _running_extreme(s1[:n], window, s2, p, g, True)
    else:
        for i in range(n):
            s2[i] = y[i]
        for k in range(1, iterations + 1):
            for i in range(n):
                s1[i] = s2[i]
            for i in range(k, n - k):
                a = np.float32(0.5) * (s1[i - k] + s1[i + k])
                if a < s1[i]:
                    s2[i] = a
    for i in range(n):
        v = y[i] - s2[i]
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
            factor = float(np.median(buf[:cnt]))
    if factor > 0.0:
        inv = np.float32(1.0 / factor)
        for i in range(n):
            y[i] *= inv


@nb.njit(cache=True, nogil=True)
def _noise_one(y, mode, buf):
    """(floor, noise) from the positive intensities among at most NOISE_SAMPLE_POINTS evenly
    spaced points: median and 1.4826·MAD, or mean and standard deviation."""
    n = y.shape[0]
    top = np.float32(0.0)
    for i in range(n):
        top = top if top > y[i] else y[i]
    # values below float32 round-off of the spectrum's maximum count as zeros
    tiny = top * np.float32(RELATIVE_ZERO)
    stride = max(1, (n + NOISE_SAMPLE_POINTS - 1) // NOISE_SAMPLE_POINTS)
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
    med = float(np.median(buf[:cnt]))
    for i in range(cnt):
        buf[i] = abs(buf[i] - med)
    return med, _MAD_TO_SIGMA * float(np.median(buf[:cnt]))


@nb.njit(cache=True, nogil=True)
def _apex(mz, y, i):
    """Centroid m/z and height of the maximum at i: 3-point Gaussian fit (parabola in log y)."""
    x0 = mz[i - 1] - mz[i]
    x2 = mz[i + 1] - mz[i]
    if y[i - 1] > 0.0 and y[i + 1] > 0.0:
        l0, l1, l2 = math.log(y[i - 1]), math.log(y[i]), math.log(y[i + 1])
        gaussian = True
    else:
        l0, l1, l2 = float(y[i - 1]), float(y[i]), float(y[i + 1])
        gaussian = False
    if x0 == 0.0 or x2 == 0.0 or x0 == x2:
        return mz[i], float(y[i])
    a = ((l0 - l1) / x0 - (l2 - l1) / x2) / (x0 - x2)
    b = (l0 - l1) / x0 - a * x0
    if a >= 0.0:
        return mz[i], float(y[i])
    xv = -b / (2.0 * a)
    xv = min(max(xv, x0), x2)
    lv = l1 + b * xv + a * xv * xv
    return mz[i] + xv, (math.exp(lv) if gaussian else lv)


@nb.njit(cache=True, nogil=True, inline="always")
def _maybe_peak(mz, y, i, limit, floor, noise, min_distance, pk_mz, pk_int, pk_snr, count, last):
    """Record a peak at i if it is one; returns the updated (count, last apex index)."""
    v = y[i]
    if v < limit or not (v > y[i - 1] and v >= y[i + 1] and v > 0.0):
        return count, last
    if count > 0 and i - last < min_distance:
        if v <= y[last]:
            return count, last
        count -= 1
    c_mz, c_int = _apex(mz, y, i)
    pk_mz[count] = c_mz
    pk_int[count] = c_int
    pk_snr[count] = (c_int - floor) / noise if noise > 0.0 else np.inf
    return count + 1, i


@nb.njit(cache=True, nogil=True)
def _peaks_one(mz, y, floor, noise, snr_threshold, min_distance, pk_mz, pk_int, pk_snr):
    n = y.shape[0]
    count = 0
    last = -(1 << 30)
    limit = floor + snr_threshold * noise
    for c0 in range(1, n - 1, 16):
        c1 = min(c0 + 16, n - 1)
        above = 0
        for i in range(c0, c1):  # vectorised: most chunks hold no point above the limit
            above += y[i] >= limit
        if above == 0:
            continue
        for i in range(c0, c1):
            count, last = _maybe_peak(
                mz, y, i, limit, floor, noise, min_distance, pk_mz, pk_int, pk_snr, count, last
            )
    return count


@nb.njit(cache=True, nogil=True)
def _chain_one(
    mz,
    y,
    out,
    cfg_i,
    cfg_f,
    coeffs,
    edges,
    pk_mz,
    pk_int,
    pk_snr,
):
    """Whole chain on one spectrum; returns (n_peaks, floor, noise). ``out`` receives the result."""
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
    pad = n + 3 * max(base_window, coeffs.shape[0])
    work = np.empty(6 * pad, np.float32)
    a, s1, s2 = work[:n], work[pad : 2 * pad], work[2 * pad : 3 * pad]
    p, g, hb = work[3 * pad : 4 * pad], work[4 * pad : 5 * pad], work[5 * pad :]
    _smooth_one(y, a, coeffs, edges, smooth_mode)
    _baseline_one(a, out, base_mode, base_window, snip_iter, s1, s2, p, g, hb)
    _normalise_one(out, norm_mode, s1)
    floor, noise = 0.0, 0.0
    if do_noise:
        floor, noise = _noise_one(out, noise_mode, s1)
    count = 0
    if do_pick:
        count = _peaks_one(
            mz, out, floor, noise, snr_threshold, min_distance, pk_mz, pk_int, pk_snr
        )
    return count, floor, noise


@nb.njit(parallel=True, cache=True, nogil=True)
def chain_dense(mz, inten, out, write_out, cfg_i, cfg_f, coeffs, edges, cap, pk_mz, pk_int, pk_snr):
    """Chain over the rows of a 2-D block; peaks of row s go to slots [s*cap, s*cap + count)."""
    n_spec, n = inten.shape
    counts = np.zeros(n_spec, np.int64)
    floors = np.zeros(n_spec, np.float64)
    noises = np.zeros(n_spec, np.float64)
    for s in nb.prange(n_spec):
        o = out[s] if write_out else np.empty(n, np.float32)
        base = s * cap
        c, f, z = _chain_one(
            mz,
            inten[s],
            o,
            cfg_i,
            cfg_f,
            coeffs,
            edges,
            pk_mz[base : base + cap],
            pk_int[base : base + cap],
            pk_snr[base : base + cap],
        )
        counts[s] = c
        floors[s] = f
        noises[s] = z
    return counts, floors, noises


@nb.njit(parallel=True, cache=True, nogil=True)
def chain_ragged(
    mz, inten, offsets, out, write_out, cfg_i, cfg_f, coeffs, edges, cap, pk_mz, pk_int, pk_snr
):
    """Chain over the CSR segments of a processed block; slots as in ``chain_dense``."""
    n_spec = offsets.shape[0] - 1
    counts = np.zeros(n_spec, np.int64)
    floors = np.zeros(n_spec, np.float64)
    noises = np.zeros(n_spec, np.float64)
    for s in nb.prange(n_spec):
        lo, hi = offsets[s], offsets[s + 1]
        o = out[lo:hi] if write_out else np.empty(hi - lo, np.float32)
        base = s * cap
        c, f, z = _chain_one(
            mz[lo:hi],
            inten[lo:hi],
            o,
            cfg_i,
            cfg_f,
            coeffs,
            edges,
            pk_mz[base : base + cap],
            pk_int[base : base + cap],
            pk_snr[base : base + cap],
        )
        counts[s] = c
        floors[s] = f
        noises[s] = z
    return counts, floors, noises


@nb.njit(parallel=True, cache=True, nogil=True)
def window_sums_dense(inten, lo, hi):
    """out[k, s] = sum(inten[s, lo[k]:hi[k]]) in float64."""
    n_spec = inten.shape[0]
    n_win = lo.shape[0]
    out = np.zeros((n_win, n_spec), np.float64)
    for s in nb.prange(n_spec):
        row = inten[s]
        for k in range(n_win):
            acc = 0.0
            for j in range(lo[k], hi[k]):
                acc += row[j]
            out[k, s] = acc
    return out


@nb.njit(parallel=True, cache=True, nogil=True)
def window_sums_ragged(mz, inten, offsets, lower, upper):
    """out[k, s] = sum of spectrum s's intensities with lower[k] <= m/z <= upper[k], float64."""
    n_spec = offsets.shape[0] - 1
    n_win = lower.shape[0]
    out = np.zeros((n_win, n_spec), np.float64)
    for s in nb.prange(n_spec):
        a, b = offsets[s], offsets[s + 1]
        m = mz[a:b]
        for k in range(n_win):
            lo = np.searchsorted(m, lower[k], side="left")
            hi = np.searchsorted(m, upper[k], side="right")
            acc = 0.0
            for j in range(a + lo, a + hi):
                acc += inten[j]
            out[k, s] = acc
    return out


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


@nb.njit(parallel=True, cache=True, nogil=True)
def basic_metrics_ragged(inten, offsets):
    """Per spectrum: TIC (exact float64 sum), index of the base peak (-1 if empty), non-zeros."""
    n_spec = offsets.shape[0] - 1
    tic = np.zeros(n_spec, np.float64)
    arg = np.full(n_spec, -1, np.int64)
    nnz = np.zeros(n_spec, np.int64)
    for s in nb.prange(n_spec):
        best = -np.inf
        cnt = 0
        for j in range(offsets[s], offsets[s + 1]):
            v = inten[j]
            if v != 0:
                cnt += 1
            if v > best:
                best = v
                arg[s] = j
        tic[s] = exact_sum(inten[offsets[s] : offsets[s + 1]])
        nnz[s] = cnt
    return tic, arg, nnz


@nb.njit(parallel=True, cache=True, nogil=True)
def exact_row_sums(inten):
    """Exact float64 sum of each row of a 2-D block."""
    out = np.zeros(inten.shape[0], np.float64)
    for s in nb.prange(inten.shape[0]):
        out[s] = exact_sum(inten[s])
    return out
