"""Likelihoods of a trained model: the probability-flow ODE, the discrete VLB, bits per dimension.

Two estimators of the same quantity, the negative log-likelihood ``−log p(x)`` in **nats per
sample** (docs/conventions.md §3), returned by :func:`ode_nll` and :func:`vlb_nll` (or
:func:`log_likelihood` with ``method=``), one module each:

* :mod:`scoresde.likelihood.ode` — the probability-flow ODE as a continuous normalizing flow
  (Song et al. 2021): −log p_ε(x) by the exact change of variables, the divergence by autograd
  or Hutchinson's estimator;
* :mod:`scoresde.likelihood.vlb` — the variational bound of the discrete chain that the SDE
  defines on an N-step grid (Ho et al. 2020, eq. 5), every term reported.

Both report what they did in a :class:`LikelihoodInfo` (:mod:`scoresde.likelihood.common`) and,
with ``levels`` given, bound the NLL of *quantized* data, from which :func:`bits_per_dim` gives
bits per dimension (:mod:`scoresde.likelihood.quantized`: the level grid, uniform
dequantization, the discretized Gaussian decoder).
"""

from __future__ import annotations

import inspect

from torch import Tensor

from .._checks import check_name
from ..sde import SDE
from .common import LikelihoodInfo
from .ode import DIVERGENCES, ode_nll
from .quantized import bits_per_dim, dequantize, discretized_gaussian_log_likelihood, level_spacing
from .vlb import vlb_nll

__all__ = [
    "DIVERGENCES",
    "METHODS",
    "LikelihoodInfo",
    "bits_per_dim",
    "dequantize",
    "discretized_gaussian_log_likelihood",
    "level_spacing",
    "log_likelihood",
    "ode_nll",
    "vlb_nll",
]

METHODS = ("ode", "vlb")


def log_likelihood(
    model, sde: SDE, x: Tensor, method: str = "ode", prediction: str | None = None, **options
) -> Tensor | tuple[Tensor, LikelihoodInfo]:
    """Negative log-likelihood of ``x`` under ``model`` in nats per sample: :func:`ode_nll` or :func:`vlb_nll`.

    ``method`` picks the estimator (``ode`` or ``vlb``); ``options`` are that function's keyword
    arguments, under the same names. Both take ``levels``, ``data_range``, ``t_min``, ``generator``,
    ``return_info``, ``y`` and ``guidance`` (class labels: −log p(x | y)). ODE only: ``rtol``,
    ``atol``, ``ode_method``, ``divergence``, ``probes``, ``probe_noise``. VLB only: ``steps``,
    ``variance``, ``grid``. Any other name, an option of the other method included, is a
    ``TypeError``.
    """
    check_name(method, "likelihood method", METHODS)
    estimators = {"ode": ode_nll, "vlb": vlb_nll}
    own = _keyword_options(estimators[method])
    unknown = sorted(set(options) - own)
    if unknown:
        other = "vlb" if method == "ode" else "ode"
        foreign = [k for k in unknown if k in _keyword_options(estimators[other])]
        where = f" ({', '.join(foreign)}: method={other!r} only)" if foreign else ""
        raise TypeError(
            f"log_likelihood(method={method!r}) got unknown option(s) {', '.join(unknown)}{where}; "
            f"accepted: {', '.join(sorted(own))}"
        )
    return estimators[method](model, sde, x, prediction, **options)


def _keyword_options(fn) -> set[str]:
    """The keyword-only arguments of ``fn``: the options :func:`log_likelihood` forwards to it."""
    return {n for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}
