"""Customer-base analytics: RFM, BG/NBD, MBG/NBD, Pareto/NBD, Gamma-Gamma, CLV, clusters and base
health. Pure computations on NumPy arrays; :mod:`winback.analytics.service` reads the store
and writes the results back (``Workspace.analytics``)."""

from winback.analytics._fit import FitResult, ModelNotConverged, NotEnoughData
from winback.analytics.bgnbd import BetaGeo
from winback.analytics.gamma_gamma import GammaGamma
from winback.analytics.mbgnbd import ModifiedBetaGeo
from winback.analytics.pareto_nbd import ParetoNBD
from winback.analytics.summary import Summary, Transactions, summary_data

__all__ = [
    "BetaGeo",
    "FitResult",
    "GammaGamma",
    "ModifiedBetaGeo",
    "ModelNotConverged",
    "NotEnoughData",
    "ParetoNBD",
    "Summary",
    "Transactions",
    "summary_data",
]
