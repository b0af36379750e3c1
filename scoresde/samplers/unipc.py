"""UniPC: unified predictor–corrector multistep solver (Zhao et al. 2023, arXiv:2302.04867).

Data-prediction form (the paper's x̂_0 variant of UniP and UniC, §3) in the half
log-SNR λ = log(α/σ), for any linear-Gaussian SDE (VP, sub-VP, VE). From x_s at λ_s, with
h = λ_t − λ_s and the previous model outputs m_0 = x̂_0(t_s), m_k = x̂_0(t_{s_k}) at λ_{s_k},

    r_k = (λ_{s_k} − λ_s)/h,   D_k = (m_k − m_0)/r_k
    UniP-p:  x_t = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) m_0 − α_t B(h) Σ_{k<p} a_k D_k
    UniC-p:  x_t^c = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) m_0
                     − α_t B(h) [Σ_{k<p} a^c_k D_k + a^c_p (m_t − m_0)],  m_t = x̂_0(x_t, t)

where B(h) = −h ("bh1") or e^{−h} − 1 ("bh2", the authors' choice for few-step sampling), and
the weights solve the order conditions R_p a = g_p/B(h): R_p's rows are the powers r_k^{i−1}
(i = 1..p), g_p's entries i!·ĥ φ_{i+1}(ĥ), ĥ = −h in the x̂_0 form, with the exponential-integrator
functions φ_1(z) = (e^z − 1)/z, φ_{k+1}(z) = (φ_k(z) − 1/k!)/z. UniC reuses m_t, the model
output the next predictor needs anyway, so it costs no model evaluation and raises the order by
one (the paper's UniC theorem; measured here: 3 for p = 2, tests/test_unipc.py); the stored
history keeps the output at the *predicted* x_t. As in the authors' code and diffusers, order-2
predictors use a_1 = ½ and UniC-1 uses a^c_1 = ½. (The paper's equation numbers are not quoted:
these formulas were checked against diffusers' ``UniPCMultistepScheduler``, to 1e-11 in float64.)

Every step is therefore a fixed linear combination of x_s and at most three x̂_0's whose weights
depend only on the grid: they are tabulated in float64 once, before the loop. The corrector is
applied after every step but the last (no model evaluation follows it). A step to t = 0
(λ = +∞) returns x̂_0. With ``lower_order_final`` (as in DPM-Solver++ here and in diffusers'
``UniPCMultistepScheduler``) the last step is first order and the one before at most second.
"""

from __future__ import annotations

import math

from torch import Tensor

from .._checks import check_name
from .common import Context, register

VARIANTS = ("bh1", "bh2")

Step = tuple[float, tuple[float, ...]]  # (c_x, weights of m_0, m_1, m_2[, m_t])


def _solve(R: list[list[float]], b: list[float]) -> list[float]:
    """Solve the small (≤ 3×3) linear system R a = b by Gaussian elimination with pivoting."""
    n = len(b)
    A = [[*row, b[i]] for i, row in enumerate(R)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(A[r][c]))
        A[c], A[p] = A[p], A[c]
        for r in range(c + 1, n):
            f = A[r][c] / A[c][c]
            for j in range(c, n + 1):
                A[r][j] -= f * A[c][j]
    a = [0.0] * n
    for r in range(n - 1, -1, -1):
        a[r] = (A[r][n] - sum(A[r][j] * a[j] for j in range(r + 1, n))) / A[r][r]
    return a


def _order_conditions(rks: list[float], h: float, variant: str) -> tuple[list[list[float]], list[float]]:
    """R_p (rows r_k^{i−1}) and the right-hand side g_p/B(h) of the order conditions, p = len(rks)."""
    hh = -h  # data prediction integrates e^{−λ}-weighted terms: the paper's h → −h
    h_phi_1 = math.expm1(hh)  # ĥ φ_1(ĥ) = e^{−h} − 1
    B_h = hh if variant == "bh1" else h_phi_1
    R, b = [], []
    h_phi_k = h_phi_1 / hh - 1  # ĥ φ_2(ĥ) = φ_1(ĥ) − 1; then ĥ φ_{k+1}(ĥ) = φ_k(ĥ) − 1/k!
    factorial = 1
    for i in range(1, len(rks) + 1):
        R.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * factorial / B_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return R, b


def unipc_table(
    lam: list[float], alpha: list[float], sigma: list[float], order: int, variant: str, lower_order_final: bool
) -> tuple[list[Step], list[Step | None]]:
    """Predictor and corrector weights for the steps from index i to i−1, i = N..1 (in that order).

    ``predictor[n] = (c_x, (w_0, …))``: x_{i−1} = c_x x_i + Σ_k w_k m_k with m_0 = x̂_0(t_i), m_1 at t_{i+1}, ….
    ``corrector[n] = (c_x, (v_0, …, v_t))``: the corrected x_{i−1} = c_x x_i + Σ_k v_k m_k + v_t x̂_0(x_{i−1}, t_{i−1});
    None on the last step and where the target is t = 0.
    """
    N = len(lam) - 1
    predictor: list[Step] = []
    corrector: list[Step | None] = []
    for n, i in enumerate(range(N, 0, -1)):  # n = completed steps = earlier model outputs available
        p = min(order, n + 1)  # warm-up: the multistep history is n + 1 outputs long
        if lower_order_final:
            p = min(p, i)  # the last step first order, the one before at most second
        h = lam[i - 1] - lam[i]
        alpha_t, c_x = alpha[i - 1], sigma[i - 1] / sigma[i]
        if math.isinf(h):  # target t = 0, σ_t = 0: x_t = x̂_0(t_s) (the first-order step's limit)
            predictor.append((0.0, (alpha_t,)))
            corrector.append(None)
            continue
        h_phi_1 = math.expm1(-h)
        rks = [(lam[i + k] - lam[i]) / h for k in range(1, p)]  # r_k < 0: the earlier outputs lie at smaller λ
        # UniP-p: a from the p − 1 order conditions of the earlier outputs; a = ½ for p = 2 (as the authors' code)
        B_h = -h if variant == "bh1" else h_phi_1
        if p == 1:
            a_p: list[float] = []
        elif p == 2:
            a_p = [0.5]
        else:
            R, b = _order_conditions(rks, h, variant)
            a_p = _solve(R, b)
        # x_t = c_x x − α_t hφ_1 m_0 − α_t B(h) Σ_k a_k (m_k − m_0)/r_k, expanded in m_0, m_1, …
        w = [-alpha_t * h_phi_1 + alpha_t * B_h * sum(a / r for a, r in zip(a_p, rks, strict=True))]
        w += [-alpha_t * B_h * a / r for a, r in zip(a_p, rks, strict=True)]
        predictor.append((c_x, tuple(w)))
        if i == 1:  # no model evaluation follows the last step: nothing to correct with
            corrector.append(None)
            continue
        # UniC-p: the same D_k plus D_t = m_t − m_0 at r = 1; a^c from all p order conditions; ½ for p = 1
        if p == 1:
            a_c = [0.5]
        else:
            R, b = _order_conditions([*rks, 1.0], h, variant)
            a_c = _solve(R, b)
        v = [-alpha_t * h_phi_1 + alpha_t * B_h * (sum(a / r for a, r in zip(a_c, rks, strict=False)) + a_c[-1])]
        v += [-alpha_t * B_h * a / r for a, r in zip(a_c, rks, strict=False)]
        v.append(-alpha_t * B_h * a_c[-1])
        corrector.append((c_x, tuple(v)))
    return predictor, corrector


def _combine(c_x: float, x: Tensor, weights: tuple[float, ...], outputs: list[Tensor]) -> Tensor:
    out = x.mul(c_x)
    for weight, m in zip(weights, outputs, strict=False):
        if weight != 0.0:
            out.add_(m, alpha=weight)
    return out


@register("unipc", order=3, stochastic=False, grid="quadratic")
def unipc(ctx: Context, x: Tensor, *, order: int = 2, variant: str = "bh2", lower_order_final: bool = True) -> Tensor:
    """UniPC multistep predictor–corrector in log-SNR, x̂_0 form (Zhao et al. 2023): UniP-p + UniC."""
    if order not in (1, 2, 3) or isinstance(order, bool):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    check_name(variant, "variant", VARIANTS)
    lam = (0.5 * ctx.sde.log_snr(ctx.times)).tolist()  # λ = log(α/σ), half the log-SNR
    predictor, corrector = unipc_table(
        lam, ctx.den.alphas, ctx.den.sigmas, int(order), variant, bool(lower_order_final)
    )
    history: list[Tensor] = []  # x̂_0 at t_i, t_{i+1}, t_{i+2} (evaluated at the predicted states)
    x_s: Tensor | None = None  # the state the previous predictor started from
    for n, i in enumerate(range(ctx.steps, 0, -1)):
        m_t = ctx.den.x0(x, i)
        if n > 0 and corrector[n - 1] is not None:  # UniC on the previous step, with its own output history
            c_x, v = corrector[n - 1]
            x = _combine(c_x, x_s, v[:-1], history)
            x.add_(m_t, alpha=v[-1])
        if n > 0:
            x = ctx.report(i, x)  # the corrected state at t_i
        history.insert(0, m_t)
        del history[3:]
        x_s = x
        c_x, w = predictor[n]
        x = _combine(c_x, x, w, history)
    return ctx.report(0, x)
