"""Indicator-dilution physics of the digital phantom (independent of the ctperf engine).

All curves are contrast enhancement in delta-HU on a uniform fine time grid (seconds from the first frame).

Model
-----
* Arterial input ``Ca(t)`` (full blood in a large artery): a gamma-variate first pass starting at the bolus
  arrival time plus a recirculation = the first pass delayed by ``recirc_delay_s`` and dispersed by an
  exponential kernel (time constant ``recirc_dispersion_s``), scaled so that its peak is ``recirculation`` times
  the first-pass peak.
* Tissue ``C(t) = CBF * RHO / (6000 * KH) * (Ca (x) h (x) R)(t)`` with ``CBF`` in mL/100g/min, ``t`` in s,
  ``h`` = pure delay ``delay_s`` followed by a unit-area exponential dispersion kernel
  ``exp(-t/tau)/tau`` (``tau = dispersion_s``; ``tau = 0`` is no dispersion), and ``R(t) = exp(-t/MTT)``
  (``R(0) = 1``, integral ``MTT``).  Hence ``CBV = CBF * MTT / 60`` [mL/100g] exactly and
  ``AUC(C) / AUC(Ca) = RHO/(100*KH) * CBV``.
* The effective residue seen by an ideal deconvolution is ``R_eff = h (x) R``; truth ``Tmax`` is the time of its
  maximum, found numerically on a fine grid: ``Tmax = delay_s + t_peak(MTT, tau)``
  (``t_peak = 0`` without dispersion, so then ``Tmax = delay``).  ``max(R_eff) < 1`` when ``tau > 0``, so an ideal
  deconvolution measures the *apparent* flow ``CBF * max(R_eff)``.
* Venous outflow (full venous blood in the sinus) ``Cv = Ca (x) k_v`` with ``k_v`` = delay ``venous_delay_s`` then a
  unit-area exponential dispersion (``venous_dispersion_s``): same area as ``Ca`` (conservation of indicator).
  Its "Tmax" relative to the AIF is therefore exactly ``venous_delay_s``.

Convolutions are computed with the trapezoidal rule on the fine grid (relative area error ~ (dt/tau)^2 / 12).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq
from scipy.signal import lfilter

#: Brain tissue density, g/mL (defined here on purpose: the phantom must not import the engine's constants).
RHO = 1.04
#: Hematocrit correction (1 - Hct_large) / (1 - Hct_small) with Hct 0.45 / 0.25.
KH = (1.0 - 0.45) / (1.0 - 0.25)
#: Tissue curve scale: C = CBF * FLOW_SCALE * (Ca (x) h (x) R), CBF in mL/100g/min -> 1/s.
FLOW_SCALE = RHO / (6000.0 * KH)


def gamma_variate_shape(x: np.ndarray, alpha: float) -> np.ndarray:
    """Unit-peak gamma variate ``x**alpha * exp(alpha*(1-x))`` (peak 1 at x = 1, 0 for x <= 0)."""
    x = np.asarray(x, dtype=float)
    out = np.zeros_like(x)
    pos = x > 0
    xp = x[pos]
    out[pos] = np.exp(alpha * (np.log(xp) + 1.0 - xp))
    return out


def gamma_fwhm_units(alpha: float) -> float:
    """Full width at half maximum of :func:`gamma_variate_shape`, in units of its time-to-peak."""
    f = lambda x: alpha * (np.log(x) + 1.0 - x) - np.log(0.5)  # noqa: E731
    lo = brentq(f, 1e-9, 1.0)
    hi = brentq(f, 1.0, 100.0)
    return hi - lo


def exp_dispersion(x: np.ndarray, tau_s: float, dt: float, axis: int = -1) -> np.ndarray:
    """Convolve ``x`` (sampled every ``dt`` s from t = 0) with the unit-area kernel ``exp(-t/tau)/tau``.

    Trapezoidal rule computed with the exact recursion ``S[k] = S[k-1]*exp(-dt/tau) + x[k]``;
    ``tau_s <= 0`` returns ``x`` unchanged (Dirac kernel).
    """
    if tau_s <= 0:
        return np.array(x, dtype=float, copy=True)
    return exp_residue_convolve(x, np.array(tau_s, dtype=float), dt, axis=axis) / tau_s


def exp_residue_convolve(x: np.ndarray, mtt_s: np.ndarray, dt: float, axis: int = -1) -> np.ndarray:
    """``(x (x) exp(-t/MTT))(t)`` on the fine grid, trapezoidal rule.

    ``x``: curve(s) sampled every ``dt`` s from t = 0 along ``axis`` (the last axis for a 1D curve).
    ``mtt_s``: scalar or array broadcastable against ``x`` without the time axis, e.g. shape (n,) with ``x`` of
    shape (T,) gives (n, T).  Returns a float64 array of the broadcast shape with time last.
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    mtt = np.asarray(mtt_s, dtype=float)
    decay = np.exp(-dt / mtt)[..., None]
    shape = np.broadcast_shapes(x.shape[:-1], mtt.shape) + (x.shape[-1],)
    out = np.empty(shape, dtype=float)
    xb = np.broadcast_to(x, shape)
    db = np.broadcast_to(decay[..., 0], shape[:-1])
    for idx in np.ndindex(*shape[:-1]):
        # running sum S[k] = S[k-1] * exp(-dt/MTT) + x[k] (first-order recursive filter)
        out[idx] = lfilter([1.0], [1.0, -float(db[idx])], xb[idx])
    # Trapezoid end corrections: half weight on x[k]*R(0) and on x[0]*R(t_k).
    out -= 0.5 * np.broadcast_to(x, shape)
    out -= 0.5 * x[..., :1] * decay ** np.arange(x.shape[-1])
    out *= dt
    return out


def shift_curve(y: np.ndarray, delay_s: float, dt: float) -> np.ndarray:
    """Delay a curve sampled every ``dt`` s from t = 0 by ``delay_s`` >= 0 (linear interpolation, zero-filled)."""
    t = np.arange(y.shape[-1]) * dt
    return np.interp(t - delay_s, t, y, left=0.0, right=float(y[-1]))


def arterial_curve(t: np.ndarray, peak_hu: float, fwhm_s: float, arrival_s: float, recirculation: float,
                   alpha: float = 3.0, recirc_delay_s: float | None = None,
                   recirc_dispersion_s: float = 4.0) -> np.ndarray:
    """Noiseless full-blood arterial enhancement ``Ca(t)`` [delta HU] on the uniform grid ``t`` [s].

    First pass: gamma variate with exponent ``alpha`` starting at ``arrival_s``, peak ``peak_hu`` and full width at
    half maximum ``fwhm_s``.  Recirculation: the first pass delayed by ``recirc_delay_s`` (default: ``fwhm_s + 2``)
    and dispersed (``recirc_dispersion_s``), scaled to ``recirculation`` x the first-pass peak.
    """
    t = np.asarray(t, dtype=float)
    dt = float(t[1] - t[0])
    t_peak = fwhm_s / gamma_fwhm_units(alpha)
    first = peak_hu * gamma_variate_shape((t - arrival_s) / t_peak, alpha)
    if recirculation <= 0:
        return first
    if recirc_delay_s is None:
        recirc_delay_s = fwhm_s + 2.0
    second = exp_dispersion(shift_curve(first, recirc_delay_s, dt), recirc_dispersion_s, dt)
    m = second.max()
    if m > 0:
        second *= recirculation * first.max() / m
    return first + second


def venous_curve(ca: np.ndarray, dt: float, venous_delay_s: float, venous_dispersion_s: float) -> np.ndarray:
    """Full venous blood ``Cv = Ca`` delayed by ``venous_delay_s`` and exponentially dispersed (same area)."""
    return exp_dispersion(shift_curve(ca, venous_delay_s, dt), venous_dispersion_s, dt)


def tissue_kernel_table(ca: np.ndarray, dt: float, mtt_values_s: np.ndarray, dispersion_s: float) -> np.ndarray:
    """Table ``G[m, k] = (Ca (x) h_disp (x) exp(-t/MTT_m))(k*dt)`` [delta HU * s], without the pure delay.

    A voxel's tissue curve is ``CBF * FLOW_SCALE * G[m, (t - delay)/dt]``.
    """
    cad = exp_dispersion(ca, dispersion_s, dt)
    return exp_residue_convolve(cad, np.asarray(mtt_values_s, dtype=float), dt)


def effective_residue_peak(mtt_values_s: np.ndarray, dispersion_s: float, dt: float = 0.005
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Time of the maximum [s] and the maximum of ``R_eff = h_disp (x) exp(-t/MTT)`` for each MTT.

    Computed numerically: ``R_eff`` is evaluated by trapezoidal convolution on a grid of ``dt`` s and the peak is
    refined by parabolic interpolation.  Without dispersion the peak is at 0 with height 1.
    """
    mtt = np.atleast_1d(np.asarray(mtt_values_s, dtype=float))
    if dispersion_s <= 0:
        return np.zeros_like(mtt), np.ones_like(mtt)
    tau = float(dispersion_s)
    # Size the search window from the closed form (only to choose the grid length).
    with np.errstate(divide="ignore", invalid="ignore"):
        guess = np.where(np.abs(mtt - tau) > 1e-9, np.log(mtt / tau) / (1.0 / tau - 1.0 / mtt), tau)
    t_end = 2.0 * float(np.nanmax(guess)) + 5.0 * dt + 1.0
    t = np.arange(0.0, t_end + dt, dt)
    h = np.exp(-t / tau) / tau
    r = exp_residue_convolve(h, mtt, dt)  # (n, T)
    k = np.argmax(r, axis=1)
    k = np.clip(k, 1, r.shape[1] - 2)
    rows = np.arange(len(mtt))
    y0, y1, y2 = r[rows, k - 1], r[rows, k], r[rows, k + 1]
    den = y0 - 2 * y1 + y2
    off = np.where(den < 0, 0.5 * (y0 - y2) / np.where(den < 0, den, -1.0), 0.0)
    t_peak = (k + off) * dt
    r_max = y1 - 0.25 * (y0 - y2) * off
    return t_peak, r_max


def effective_residue(t: np.ndarray, mtt_s: np.ndarray, dispersion_s: float) -> np.ndarray:
    """Closed form of ``R_eff(t) = (exp(-t/tau)/tau) (x) exp(-t/MTT)`` (t >= 0 after the delay)."""
    t = np.asarray(t, float)
    m = np.asarray(mtt_s, float)
    tau = float(dispersion_s)
    if tau <= 0:
        return np.exp(-t / m)
    same = np.abs(m - tau) < 1e-6
    md = np.where(same, m + 1.0, m)
    general = md / (md - tau) * (np.exp(-t / md) - np.exp(-t / tau))
    return np.where(same, t / tau * np.exp(-t / tau), general)


def effective_residue_derivative(t: np.ndarray, mtt_s: np.ndarray, dispersion_s: float) -> np.ndarray:
    """Time derivative (1/s) of :func:`effective_residue`."""
    t = np.asarray(t, float)
    m = np.asarray(mtt_s, float)
    tau = float(dispersion_s)
    if tau <= 0:
        return -np.exp(-t / m) / m
    same = np.abs(m - tau) < 1e-6
    md = np.where(same, m + 1.0, m)
    general = md / (md - tau) * (np.exp(-t / tau) / tau - np.exp(-t / md) / md)
    return np.where(same, np.exp(-t / tau) * (1.0 - t / tau) / tau, general)


def curve_ttp(t: np.ndarray, y: np.ndarray) -> float:
    """Time-to-peak of a finely sampled curve [s] with parabolic refinement."""
    k = int(np.argmax(y))
    if 0 < k < len(y) - 1:
        y0, y1, y2 = y[k - 1], y[k], y[k + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            return float(t[k] + 0.5 * (y0 - y2) / den * (t[1] - t[0]))
    return float(t[k])


# ----------------------------------------------------------------------------------------------- residue families
#: Residue (transit-time) shapes of the phantom families (see :func:`residue_function`).
RESIDUE_SHAPES = ("exponential", "gamma", "box", "lognormal")


def residue_function(t: np.ndarray, mtt_s, shape: str = "exponential", *, gamma_k: float = 3.0,
                     lognormal_sigma: float = 0.5, dt: float | None = None) -> np.ndarray:
    """Residue function ``R(t)`` with ``R(0) = 1`` and area (mean transit time) ``mtt_s``.

    Parameters
    ----------
    t : (T,) array, s, uniform from 0.
    mtt_s : scalar or (n,) array, s, mean transit time(s).
    shape : one of :data:`RESIDUE_SHAPES`:

        * ``"exponential"``: ``exp(-t/MTT)`` (one well-mixed compartment; gamma with k = 1);
        * ``"gamma"``: ``1 - GammaCDF(t; k, MTT/k)`` (gamma-distributed transit times, shape ``gamma_k``);
        * ``"box"``: 1 for ``t < MTT``, else 0 (plug flow).  On the sampled grid the edge sample holds the
          cell average, so the discrete area is exactly ``MTT``;
        * ``"lognormal"``: ``1 - LogNormalCDF(t)`` with log-SD ``lognormal_sigma`` and mean ``MTT``.
    dt : grid step (s) for the box edge; default ``t[1] - t[0]``.

    Returns
    -------
    (T,) or (n, T) float64 array (time last).
    """
    from scipy import stats

    t = np.asarray(t, dtype=float)
    m = np.asarray(mtt_s, dtype=float)
    mm = m[..., None]
    if shape == "exponential":
        out = np.exp(-t / mm)
    elif shape == "gamma":
        k = float(gamma_k)
        out = stats.gamma.sf(t, k, scale=mm / k)
    elif shape == "box":
        step = float(dt if dt is not None else t[1] - t[0])
        out = np.clip((mm - t) / step + 0.5, 0.0, 1.0)
        out[..., 0] = 1.0
    elif shape == "lognormal":
        s = float(lognormal_sigma)
        out = stats.lognorm.sf(t, s, scale=np.exp(np.log(mm) - 0.5 * s * s))
    else:
        raise ValueError(f"unknown residue shape {shape!r}; expected one of {RESIDUE_SHAPES}")
    return np.asarray(out, dtype=float)


def convolve_residue(x: np.ndarray, residue: np.ndarray, dt: float) -> np.ndarray:
    """``(x (x) R)(t)`` on the fine grid by the trapezoidal rule (FFT); ``x`` (T,), ``residue`` (..., T)."""
    from scipy.signal import fftconvolve

    x = np.asarray(x, dtype=float)
    r = np.asarray(residue, dtype=float)
    n = x.shape[-1]
    full = fftconvolve(np.broadcast_to(x, r.shape), r, axes=-1)[..., :n]
    full -= 0.5 * x * r[..., :1] + 0.5 * x[0] * r
    return full * dt


def tissue_kernel_table_shape(ca: np.ndarray, dt: float, mtt_values_s: np.ndarray, dispersion_s: float,
                              shape: str = "exponential", **shape_kw) -> np.ndarray:
    """Like :func:`tissue_kernel_table` for any residue shape: ``(Ca (x) h_disp (x) R_m)(k dt)``, (m, T).

    The exponential shape uses the exact recursion of :func:`tissue_kernel_table` (same numbers as the
    default phantom); the other shapes an FFT convolution with the trapezoidal rule.
    """
    if shape == "exponential":
        return tissue_kernel_table(ca, dt, mtt_values_s, dispersion_s)
    cad = exp_dispersion(ca, dispersion_s, dt)
    t = np.arange(len(ca)) * dt
    res = residue_function(t, np.asarray(mtt_values_s, float), shape, dt=dt, **shape_kw)
    return convolve_residue(cad, res, dt)


def residue_truth(mtt_values_s, dispersion_s: float, shape: str = "exponential", *, dt: float = 0.01,
                  **shape_kw) -> tuple[np.ndarray, np.ndarray]:
    """Truth peak time [s] (Tmax without the delay) and peak height of the dispersed residue ``h (x) R``.

    ``h`` is the unit-area exponential transport kernel ``exp(-t/tau)/tau`` (``tau = dispersion_s``; 0 = none).
    Definition used for the truth ``Tmax = delay + t_peak``:

    * exponential, gamma, lognormal: ``t_peak = argmax(h (x) R)`` (0 without dispersion: ``R`` peaks at 0);
    * box: the plateau start, i.e. the time the rising edge of ``h (x) R`` first reaches half of its maximum
      (0 without dispersion; about the median ``tau ln 2`` of the kernel when ``MTT >> tau``).  The argmax
      of a dispersed box is its plateau *end* (``MTT``), an ill-posed quantity that is not used.

    The height ``max(h (x) R) <= 1`` is the fraction of the flow an ideal deconvolution reads as the residue
    peak (apparent flow = CBF * height).  Returns two float64 arrays shaped like ``mtt_values_s`` (1D).
    """
    mtt = np.atleast_1d(np.asarray(mtt_values_s, dtype=float))
    tau = float(dispersion_s)
    if tau <= 0:
        return np.zeros_like(mtt), np.ones_like(mtt)
    if shape == "exponential":
        return effective_residue_peak(mtt, tau)
    t_end = 3.0 * float(mtt.max()) + 12.0 * tau + 2.0
    t = np.arange(0.0, t_end + dt, dt)
    r = residue_function(t, mtt, shape, dt=dt, **shape_kw)
    reff = exp_dispersion(r, tau, dt, axis=-1)
    rows = np.arange(len(mtt))
    r_max = reff.max(axis=1)
    if shape == "box":
        above = reff >= 0.5 * r_max[:, None]
        k = np.argmax(above, axis=1)
        k0 = np.maximum(k - 1, 0)
        y0, y1 = reff[rows, k0], reff[rows, k]
        frac = np.where(y1 > y0, (0.5 * r_max - y0) / np.where(y1 > y0, y1 - y0, 1.0), 0.0)
        return (k0 + np.clip(frac, 0.0, 1.0)) * dt, r_max
    k = np.clip(np.argmax(reff, axis=1), 1, reff.shape[1] - 2)
    y0, y1, y2 = reff[rows, k - 1], reff[rows, k], reff[rows, k + 1]
    den = y0 - 2 * y1 + y2
    off = np.where(den < 0, 0.5 * (y0 - y2) / np.where(den < 0, den, -1.0), 0.0)
    return (k + off) * dt, y1 - 0.25 * (y0 - y2) * off
