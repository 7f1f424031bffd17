"""Exact and certified optimization of ReLU networks over a box (issue 15).

- :mod:`~adr_rl.certify.network`: a module's affine layers (:func:`extract_relu_network`)
  and the affine map from the variable to the network input (:class:`InputMap`,
  :func:`prefix_input_map` for the critic form, :func:`probe_input_map` for callables).
- :mod:`~adr_rl.certify.bounds`: interval and CROWN bounds, optionally LP-tightened,
  and an upper bound on the objective over the box.
- :mod:`~adr_rl.certify.formulation`: the MILP encoding (one binary per unstable unit).
- :mod:`~adr_rl.certify.milp`: the exact maximum with its proven bound
  (:func:`exact_maximize`, :func:`exact_maximize_fn`), the min of twin critics included;
  :mod:`~adr_rl.certify.branch`: branch and bound over the box for low-dimensional
  variables, with MILP leaves.
- :mod:`~adr_rl.certify.region`: the L_p radius of the linear region around a point
  (seed 002), whether a box lies in one region, the share of stable units, and the
  best point of a region (the LP that polishes solver points).

Everything runs in float64 on the CPU and only reads the user's modules.
"""

from adr_rl.certify.bounds import (
    BOUND_METHODS,
    LayerBounds,
    crown_bounds,
    interval_bounds,
    lp_relaxation_bound,
    network_bounds,
    objective_upper_bound,
)
from adr_rl.certify.cnn import (
    CNN_BOUND_METHODS,
    CnnBounds,
    CnnOp,
    cnn_bounds,
    cnn_ops,
    cnn_preactivations,
)
from adr_rl.certify.milp import (
    DEFAULT_MIP_REL_GAP,
    DEFAULT_TIME_LIMIT,
    ExactResult,
    affine_problem,
    exact_maximize,
    exact_maximize_fn,
    solve_exact,
    upper_bound_fn,
)
from adr_rl.certify.network import (
    AffineLayers,
    InputMap,
    ReluNetwork,
    UnsupportedLayerError,
    affine_layers,
    as_affine_layers,
    extract_relu_network,
    prefix_input_map,
    probe_input_map,
)
from adr_rl.certify.region import (
    RegionRadius,
    box_in_one_region,
    linear_region_radius,
    region_argmax,
    stable_unit_share,
)

__all__ = [
    "BOUND_METHODS",
    "CNN_BOUND_METHODS",
    "CnnBounds",
    "CnnOp",
    "cnn_bounds",
    "cnn_ops",
    "cnn_preactivations",
    "DEFAULT_MIP_REL_GAP",
    "DEFAULT_TIME_LIMIT",
    "AffineLayers",
    "ExactResult",
    "affine_problem",
    "upper_bound_fn",
    "InputMap",
    "LayerBounds",
    "RegionRadius",
    "ReluNetwork",
    "UnsupportedLayerError",
    "affine_layers",
    "as_affine_layers",
    "box_in_one_region",
    "crown_bounds",
    "exact_maximize",
    "exact_maximize_fn",
    "extract_relu_network",
    "interval_bounds",
    "linear_region_radius",
    "lp_relaxation_bound",
    "network_bounds",
    "objective_upper_bound",
    "prefix_input_map",
    "probe_input_map",
    "region_argmax",
    "solve_exact",
    "stable_unit_share",
]
