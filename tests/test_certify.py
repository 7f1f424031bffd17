"""Exact and certified optimization (adr_rl.certify): bounds, MILP, region radius.

The exact maximum is checked against a plain transcription of its definition: the
maximum over every activation pattern of the LP "maximize the pattern's affine
function over the pattern's polyhedron within the box" (float64, SciPy's HiGHS).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from torch import nn

from adr_rl.certify import (
    AffineLayers,
    InputMap,
    UnsupportedLayerError,
    as_affine_layers,
    box_in_one_region,
    crown_bounds,
    exact_maximize,
    exact_maximize_fn,
    extract_relu_network,
    interval_bounds,
    linear_region_radius,
    lp_relaxation_bound,
    objective_upper_bound,
    probe_input_map,
    stable_unit_share,
)
from adr_rl.certify.branch import branch_and_bound
from adr_rl.certify.network import objective_value
from adr_rl.certify.region import region_argmax

F64 = torch.float64


#: Seconds per problem in the correctness tests. These tiny problems solve in
#: milliseconds; the limit only guards against a hang, and it is generous so that a busy
#: machine (CI beside a training job) cannot turn a correct search into "time_limit".
SOLVE_LIMIT = 300.0


def mlp(sizes: tuple[int, ...], seed: int, scale: float = 1.0) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        lin = nn.Linear(a, b).to(F64)
        with torch.no_grad():
            lin.weight.copy_(scale * torch.randn(b, a, generator=gen, dtype=F64) / math.sqrt(a))
            lin.bias.copy_(0.3 * torch.randn(b, generator=gen, dtype=F64))
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def random_box(batch: int, d: int, seed: int, width: float = 1.0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    center = torch.randn(batch, d, generator=gen, dtype=F64) * 0.5
    half = width * (0.2 + torch.rand(batch, d, generator=gen, dtype=F64))
    return center - half, center + half


def samples_in(lo: torch.Tensor, hi: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``(n, B, d)`` uniform samples of each row's box, corners included."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, *lo.shape, generator=gen, dtype=F64)
    u[: min(n, 64)] = u[: min(n, 64)].round()  # corners: where affine pieces peak
    return lo + u * (hi - lo)


# --------------------------------------------------------------------------------------
# brute force: every activation pattern's LP
# --------------------------------------------------------------------------------------
def pattern_pieces(
    net: nn.Sequential, lo: np.ndarray, hi: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Feasible patterns' ``(A_ub, b_ub, out_coef, out_const)``: the region
    ``A_ub x <= b_ub`` and the affine output there."""
    weights = [m.weight.detach().numpy() for m in net if isinstance(m, nn.Linear)]
    biases = [m.bias.detach().numpy() for m in net if isinstance(m, nn.Linear)]
    sizes = [w.shape[0] for w in weights[:-1]]
    pieces = []
    for bits in itertools.product([0, 1], repeat=sum(sizes)):
        coef, const = np.eye(lo.size), np.zeros(lo.size)
        rows, rhs, start = [], [], 0
        for w, b, n in zip(weights[:-1], biases[:-1], sizes, strict=True):
            zc, z0 = w @ coef, w @ const + b
            on = np.array(bits[start : start + n], dtype=bool)
            start += n
            # active: z >= 0  ->  -zc x <= z0;  inactive: z <= 0  ->  zc x <= -z0
            rows.append(np.where(on[:, None], -zc, zc))
            rhs.append(np.where(on, z0, -z0))
            coef, const = zc * on[:, None], z0 * on
        a_ub, b_ub = np.concatenate(rows), np.concatenate(rhs)
        feasible = linprog(
            np.zeros(lo.size), A_ub=a_ub, b_ub=b_ub, bounds=list(zip(lo, hi, strict=True))
        )
        if feasible.status == 0:
            pieces.append(
                (a_ub, b_ub, weights[-1][0] @ coef, float(weights[-1][0] @ const + biases[-1][0]))
            )
    return pieces


def brute_force_max(nets: list[nn.Sequential], lo: np.ndarray, hi: np.ndarray) -> float:
    """``max_x min_k net_k(x)`` over the box by enumerating pattern combinations."""
    per_net = [pattern_pieces(n, lo, hi) for n in nets]
    best = -math.inf
    d = lo.size
    for combo in itertools.product(*per_net):
        # variables (x, t): maximize t, t <= out_k(x), x in every piece's region
        a_ub = [np.hstack([a, np.zeros((a.shape[0], 1))]) for a, _, _, _ in combo]
        b_ub = [b for _, b, _, _ in combo]
        for _, _, oc, o0 in combo:
            a_ub.append(np.hstack([-oc, [1.0]])[None])
            b_ub.append(np.array([o0]))
        c = np.zeros(d + 1)
        c[-1] = -1.0
        res = linprog(
            c,
            A_ub=np.concatenate(a_ub),
            b_ub=np.concatenate(b_ub),
            bounds=[*zip(lo, hi, strict=True), (None, None)],
        )
        if res.status == 0:
            best = max(best, -res.fun)
    return best


# --------------------------------------------------------------------------------------
# networks: extraction and errors
# --------------------------------------------------------------------------------------
def test_extraction_matches_module() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(),
        nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 4)),  # consecutive linears multiply out
        nn.ReLU(),
        nn.Identity(),
        nn.Sequential(nn.Linear(4, 6), nn.ReLU()),
        nn.Linear(6, 2),
    ).to(F64)
    relu_net = extract_relu_network(net)
    assert relu_net.hidden_sizes == (4, 6) and relu_net.output_dim == 2
    x = torch.randn(50, 3, dtype=F64)
    torch.testing.assert_close(relu_net.forward(x), net(x).detach())


@pytest.mark.parametrize(
    ("net", "match"),
    [
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(2, 1)), "Conv2d.*convolutions"),
        (nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)), "'1' \\(Tanh\\)"),
        (nn.Sequential(nn.ReLU(), nn.Linear(2, 1)), "must follow an nn.Linear"),
        (nn.Sequential(nn.Linear(2, 3), nn.ReLU()), "end with an nn.Linear"),
        (nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.LayerNorm(3), nn.Linear(3, 1)), "LayerNorm"),
    ],
)
def test_unsupported_layers_raise(net: nn.Module, match: str) -> None:
    with pytest.raises(UnsupportedLayerError, match=match):
        extract_relu_network(net)
    lo, hi = -torch.ones(1, 2, dtype=F64), torch.ones(1, 2, dtype=F64)
    with pytest.raises(TypeError):  # UnsupportedLayerError is a TypeError
        exact_maximize(net, lo, hi)


def test_custom_module_is_rejected() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)

    with pytest.raises(UnsupportedLayerError, match="Block"):
        extract_relu_network(nn.Sequential(Block()))


def test_bad_inputs_raise() -> None:
    net = mlp((2, 4, 1), 0)
    lo, hi = -torch.ones(2, 2, dtype=F64), torch.ones(2, 2, dtype=F64)
    with pytest.raises(ValueError, match="finite"):
        exact_maximize(net, lo, torch.full_like(hi, math.inf))
    with pytest.raises(ValueError, match="lower > upper"):
        exact_maximize(net, hi, lo)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        exact_maximize(net, lo[:, :1], hi[:, :1])
    with pytest.raises(ValueError, match="time_limit"):
        exact_maximize(net, lo, hi, time_limit=0)
    with pytest.raises(ValueError, match="strategy"):
        exact_maximize(net, lo, hi, strategy="magic")
    with pytest.raises(ValueError, match="scalar output"):
        exact_maximize(mlp((2, 4, 2), 0), lo, hi, strategy="milp")
    with pytest.raises(ValueError, match="p must be"):
        linear_region_radius(net, lo, p=3)


# --------------------------------------------------------------------------------------
# the exact maximum
# --------------------------------------------------------------------------------------
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.sampled_from([2, 3]))
def test_exact_max_equals_brute_force(seed: int, d: int) -> None:
    net = mlp((d, 4, 3, 1), seed)
    lo, hi = random_box(1, d, seed)
    truth = brute_force_max([net], lo[0].numpy(), hi[0].numpy())
    for strategy in ("milp", "split"):
        res = exact_maximize(net, lo, hi, strategy=strategy, time_limit=SOLVE_LIMIT)
        assert res.status == ["optimal"]
        assert res.value.item() == pytest.approx(truth, abs=1e-6)
        assert res.upper_bound.item() >= truth - 1e-6
        assert res.gap.item() <= 1e-5
        x = res.x[0]
        assert ((x >= lo[0] - 1e-9) & (x <= hi[0] + 1e-9)).all()
        with torch.no_grad():  # the value is the real network's at the point
            assert net(res.x).item() == pytest.approx(res.value.item(), abs=1e-9)
    # Splitting down to small leaves (at most d unstable units). Fewer than d would not
    # always end: at a vertex where d activation boundaries meet, every box around it
    # keeps d unstable units however small it gets (seed 240, d=3, took minutes).
    value, bound, status, boxes = split_down(as_affine_layers(net), lo, hi, d)
    assert status == "optimal" and value == pytest.approx(truth, abs=1e-6)
    assert truth - 1e-9 <= bound <= truth + 1e-5
    root_unstable = sum(
        int(b.unstable().sum()) for b in objective_upper_bound(as_affine_layers(net), lo, hi)[1]
    )
    assert boxes > 1 or root_unstable <= d  # the box really got split when it had to be


def split_down(
    layers: list[AffineLayers], lo: torch.Tensor, hi: torch.Tensor, leaf_unstable: int
) -> tuple[float, float, str, int]:
    """Branch and bound on row 0 with small leaves, so the box really gets split."""
    found = branch_and_bound(
        [n.select(0) for n in layers],
        lo[0],
        hi[0],
        time_limit=SOLVE_LIMIT,
        mip_rel_gap=1e-6,
        leaf_unstable=leaf_unstable,
    )
    return found.value, found.upper_bound, found.status, found.boxes


@pytest.mark.parametrize("seed", [0, 1])
def test_twin_min_equals_brute_force(seed: int) -> None:
    q1, q2 = mlp((2, 3, 3, 1), seed), mlp((2, 3, 3, 1), seed + 100)
    lo, hi = random_box(1, 2, seed, width=1.5)
    truth = brute_force_max([q1, q2], lo[0].numpy(), hi[0].numpy())
    for strategy in ("milp", "split"):
        res = exact_maximize([q1, q2], lo, hi, strategy=strategy, time_limit=SOLVE_LIMIT)
        assert res.status == ["optimal"]
        assert res.value.item() == pytest.approx(truth, abs=1e-6)
        with torch.no_grad():
            assert torch.minimum(q1(res.x), q2(res.x)).item() == pytest.approx(truth, abs=1e-6)
    # min of twins is below each one's own maximum
    for q in (q1, q2):
        assert exact_maximize(q, lo, hi, time_limit=SOLVE_LIMIT).value.item() >= truth - 1e-9
    for leaf in (0, 2):
        value, bound, status, _ = split_down(as_affine_layers([q1, q2]), lo, hi, leaf)
        assert status == "optimal" and value == pytest.approx(truth, abs=1e-6)
        assert truth - 1e-9 <= bound <= truth + 1e-5


def test_batch_rows_are_independent() -> None:
    net = mlp((3, 8, 8, 1), 3)
    lo, hi = random_box(3, 3, 3)
    together = exact_maximize(net, lo, hi, strategy="milp", time_limit=SOLVE_LIMIT)
    for r in range(3):
        alone = exact_maximize(
            net, lo[r : r + 1], hi[r : r + 1], strategy="milp", time_limit=SOLVE_LIMIT
        )
        assert alone.value.item() == pytest.approx(together.value[r].item(), abs=1e-7)


def test_upper_bounds_cover_random_samples() -> None:
    net = mlp((3, 16, 16, 1), 7)
    lo, hi = random_box(2, 3, 7)
    xs = samples_in(lo, hi, 100_000 // 2, 8)  # 1e5 samples over the two rows
    with torch.no_grad():
        sampled = net(xs.reshape(-1, 3)).reshape(xs.shape[0], 2).amax(dim=0)
    layers = as_affine_layers(net)
    res = exact_maximize(net, lo, hi, time_limit=SOLVE_LIMIT)
    bounds = {
        m: objective_upper_bound(layers, lo, hi, m)[0] for m in ("interval", "crown", "crown_lp")
    }
    bounds["lp"] = lp_relaxation_bound(layers, objective_upper_bound(layers, lo, hi)[1], lo, hi)
    bounds["exact"] = res.upper_bound
    for name, ub in bounds.items():
        assert (ub >= sampled - 1e-9).all(), name
    assert (res.value >= sampled - 1e-9).all()  # the exact max beats every sample
    assert (bounds["crown"] <= bounds["interval"] + 1e-12).all()
    assert (bounds["crown_lp"] <= bounds["crown"] + 1e-12).all()
    assert (bounds["lp"] <= bounds["crown"] + 1e-7).all()
    assert (bounds["lp"] >= res.value - 1e-7).all()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), width=st.floats(0.05, 2.0))
def test_crown_never_looser_than_interval_and_sound(seed: int, width: float) -> None:
    net = mlp((3, 12, 12, 8, 1), seed)
    lo, hi = random_box(2, 3, seed, width)
    layers = as_affine_layers(net)[0]
    ibp, crown = interval_bounds(layers, lo, hi), crown_bounds(layers, lo, hi)
    xs = samples_in(lo, hi, 2000, seed).reshape(-1, 3)
    zs = [*layers.pre_activations(xs), layers.forward(xs)]
    for k, z in enumerate(zs):
        z = z.reshape(2000, 2, -1)
        assert (crown.upper[k] <= ibp.upper[k] + 1e-12).all()
        assert (crown.lower[k] >= ibp.lower[k] - 1e-12).all()
        assert (z <= crown.upper[k] + 1e-9).all() and (z >= crown.lower[k] - 1e-9).all()
    assert (crown.unstable() <= ibp.unstable()).all()


@pytest.mark.parametrize("strategy", ["milp", "split"])
def test_time_out_is_reported(strategy: str) -> None:
    net = mlp((6, 64, 64, 1), 11, scale=1.5)
    lo, hi = -torch.ones(1, 6, dtype=F64), torch.ones(1, 6, dtype=F64)
    res = exact_maximize(net, lo, hi, time_limit=0.05, strategy=strategy)
    assert res.status == ["time_limit"]
    # The limit is honoured (no hang, no full solve); the bound is loose on purpose: on a
    # machine shared with training jobs a 0.05 s limit can take seconds of wall time.
    assert res.solve_time.item() < 60.0
    assert res.gap.item() > 0 and res.upper_bound.item() > res.value.item()
    xs = samples_in(lo, hi, 20_000, 0).reshape(-1, 6)
    with torch.no_grad():
        assert res.upper_bound.item() >= net(xs).max().item() - 1e-9
        assert net(res.x).item() == pytest.approx(res.value.item(), abs=1e-9)


def test_warm_start_is_never_lost() -> None:
    net = mlp((6, 64, 64, 1), 11, scale=1.5)
    lo, hi = -torch.ones(1, 6, dtype=F64), torch.ones(1, 6, dtype=F64)
    xs = samples_in(lo, hi, 5000, 1).reshape(-1, 6)
    with torch.no_grad():
        best = net(xs).argmax()
    res = exact_maximize(net, lo, hi, time_limit=0.05, warm_start=xs[best][None], strategy="milp")
    with torch.no_grad():
        assert res.value.item() >= net(xs[best][None]).item()


# --------------------------------------------------------------------------------------
# the critic form: affine input maps, prefixes, probing
# --------------------------------------------------------------------------------------
def critic_case(seed: int) -> tuple[nn.Sequential, nn.Sequential, torch.Tensor, torch.Tensor]:
    q1, q2 = mlp((5, 10, 8, 1), seed), mlp((5, 10, 8, 1), seed + 1)
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 3, generator=gen, dtype=F64)
    actions = torch.rand(3, 2, generator=gen, dtype=F64) * 1.6 - 0.8
    return q1, q2, features, actions


def test_critic_form_equals_plain_form() -> None:
    q1, q2, features, actions = critic_case(0)
    lo, hi = (actions - 0.2).clamp_min(-1), (actions + 0.2).clamp_max(1)
    critic = exact_maximize(
        [q1, q2], lo, hi, prefix=features, strategy="milp", time_limit=SOLVE_LIMIT
    )
    for r in range(3):
        # the same problem as plain networks: the state's part folded into the bias
        plain = []
        for q in (q1, q2):
            first = nn.Linear(2, 10).to(F64)
            with torch.no_grad():
                first.weight.copy_(q[0].weight[:, 3:])
                first.bias.copy_(q[0].bias + q[0].weight[:, :3] @ features[r])
            plain.append(nn.Sequential(first, *list(q)[1:]))
        alone = exact_maximize(
            plain, lo[r : r + 1], hi[r : r + 1], strategy="milp", time_limit=SOLVE_LIMIT
        )
        assert alone.value.item() == pytest.approx(critic.value[r].item(), abs=1e-7)
    # the same through an explicit input map u = P x + q
    matrix = torch.zeros(3, 5, 2, dtype=F64)
    matrix[:, 3:, :] = torch.eye(2, dtype=F64)
    offset = torch.cat([features, torch.zeros(3, 2, dtype=F64)], dim=1)
    mapped = exact_maximize(
        [q1, q2], lo, hi, input_map=InputMap(matrix, offset), time_limit=SOLVE_LIMIT
    )
    torch.testing.assert_close(mapped.value, critic.value, atol=1e-7, rtol=0)


def test_probed_callable_equals_prefix_form() -> None:
    q1, q2, features, actions = critic_case(1)
    lo, hi = (actions - 0.3).clamp_min(-1), (actions + 0.3).clamp_max(1)

    def fn(a: torch.Tensor) -> torch.Tensor:
        u = torch.cat([features, a], dim=1)
        return torch.minimum(q1(u), q2(u))

    probed = exact_maximize_fn(fn, actions, lo, hi, network=[q1, q2])
    direct = exact_maximize([q1, q2], lo, hi, prefix=features, time_limit=SOLVE_LIMIT)
    torch.testing.assert_close(probed.value, direct.value, atol=1e-7, rtol=0)
    maps, out = probe_input_map(fn, actions, [q1, q2])
    torch.testing.assert_close(maps[0].apply(actions), torch.cat([features, actions], dim=1))
    assert out.shape == (3, 1)


def test_probe_errors() -> None:
    q1, q2, features, actions = critic_case(2)
    lo, hi = actions - 0.1, actions + 0.1

    def squared(a: torch.Tensor) -> torch.Tensor:
        return q1(torch.cat([features, a * a], dim=1))

    with pytest.raises(ValueError, match="not an affine function"):
        exact_maximize_fn(squared, actions, lo, hi, network=q1)

    def twice(a: torch.Tensor) -> torch.Tensor:
        u = torch.cat([features, a], dim=1)
        return q1(u) + q1(u)

    with pytest.raises(ValueError, match="called 2 times"):
        exact_maximize_fn(twice, actions, lo, hi, network=q1)

    def mean(a: torch.Tensor) -> torch.Tensor:
        u = torch.cat([features, a], dim=1)
        return (q1(u) + q2(u)) / 2

    with pytest.raises(ValueError, match="not the min"):
        exact_maximize_fn(mean, actions, lo, hi, network=[q1, q2])


def snapshot(net: nn.Module) -> dict:
    return {
        "params": [p.detach().clone() for p in net.parameters()],
        "grad": [p.requires_grad for p in net.parameters()],
        "training": [m.training for m in net.modules()],
        "hooks": [
            (len(m._forward_pre_hooks), len(m._forward_hooks), len(m._backward_hooks))
            for m in net.modules()
        ],
    }


def assert_same(before: dict, after: dict) -> None:
    for a, b in zip(before["params"], after["params"], strict=True):
        assert torch.equal(a, b)
    assert before["grad"] == after["grad"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]


@pytest.mark.parametrize("training", [True, False])
def test_networks_untouched_also_after_an_exception(training: bool) -> None:
    q1, q2, features, actions = critic_case(3)
    q1.train(training)
    q2[0].weight.requires_grad_(False)
    lo, hi = actions - 0.1, actions + 0.1
    before = [snapshot(q1), snapshot(q2)]
    calls = {"n": 0}

    def fn(a: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        u = torch.cat([features, a], dim=1)
        return torch.minimum(q1(u), q2(u))

    exact_maximize_fn(fn, actions, lo, hi, network=[q1, q2])
    linear_region_radius([q1, q2], actions, prefix=features)
    stable_unit_share([q1, q2], lo, hi, prefix=features)
    assert_same(before[0], snapshot(q1))
    assert_same(before[1], snapshot(q2))

    def failing(a: torch.Tensor) -> torch.Tensor:
        out = fn(a)
        if calls["n"] >= 3:
            raise RuntimeError("boom")
        return out

    calls["n"] = 0
    with pytest.raises(RuntimeError, match="boom"):
        exact_maximize_fn(failing, actions, lo, hi, network=[q1, q2])
    assert_same(before[0], snapshot(q1))
    assert_same(before[1], snapshot(q2))


# --------------------------------------------------------------------------------------
# the linear region radius (Lee et al. 2019)
# --------------------------------------------------------------------------------------
def pattern(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    zs = extract_relu_network(net).pre_activations(x)
    return torch.cat([z > 0 for z in zs], dim=1)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.sampled_from([2.0, math.inf]))
def test_region_radius_is_exact(seed: int, p: float) -> None:
    net = mlp((3, 10, 10, 1), seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, generator=gen, dtype=F64)
    rad = linear_region_radius(net, x, p)
    assert (rad.radius > 0).all() and torch.isfinite(rad.radius).all()
    base = pattern(net, x)
    # inside: random points at p-distance < radius keep the pattern
    for _ in range(200):
        v = torch.randn(4, 3, generator=gen, dtype=F64)
        if p == math.inf:
            v = v.sign()  # a vertex of the L-inf sphere, the farthest points
        v = v / torch.linalg.vector_norm(v, ord=p, dim=1, keepdim=True)
        scale = 0.999 * rad.radius[:, None] * torch.rand(4, 1, generator=gen, dtype=F64).sqrt()
        assert torch.equal(pattern(net, x + scale * v), base)
    # along the nearest unit's gradient: the same pattern just inside, another just beyond
    norms = torch.linalg.vector_norm(rad.direction, ord=p, dim=1)
    torch.testing.assert_close(norms, torch.ones(4, dtype=F64))
    r = rad.radius[:, None]
    assert torch.equal(pattern(net, x + 0.999 * r * rad.direction), base)
    beyond = pattern(net, x + 1.001 * r * rad.direction)
    assert (beyond != base).any(dim=1).all()


def test_box_in_one_region_matches_the_radius() -> None:
    net = mlp((2, 12, 12, 1), 5)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    r = linear_region_radius(net, x, "inf").radius[:, None]
    assert box_in_one_region(net, x, x - 0.99 * r, x + 0.99 * r).all()
    assert not box_in_one_region(net, x, x - 1.01 * r, x + 1.01 * r).any()
    # inside one region every unit is stable, and the maximum is at a corner
    small_lo, small_hi = x - 0.5 * r, x + 0.5 * r
    share = stable_unit_share(net, small_lo, small_hi, method="crown")
    torch.testing.assert_close(share, torch.ones(6, dtype=F64))
    res = exact_maximize(net, small_lo, small_hi, time_limit=SOLVE_LIMIT)
    corners = torch.stack(
        [
            torch.where(torch.tensor(c, dtype=torch.bool), small_hi, small_lo)
            for c in itertools.product([0, 1], repeat=2)
        ]
    )
    with torch.no_grad():
        corner_max = net(corners.reshape(-1, 2)).reshape(4, 6).amax(dim=0)
    torch.testing.assert_close(res.value, corner_max, atol=1e-9, rtol=0)


def test_twin_region_is_the_intersection() -> None:
    q1, q2, features, actions = critic_case(4)
    both = linear_region_radius([q1, q2], actions, prefix=features)
    one = linear_region_radius(q1, actions, prefix=features)
    two = linear_region_radius(q2, actions, prefix=features)
    torch.testing.assert_close(both.radius, torch.minimum(one.radius, two.radius))


def test_region_argmax_is_the_best_point_of_the_region() -> None:
    q1, q2 = mlp((2, 6, 6, 1), 9), mlp((2, 6, 6, 1), 10)
    layers = as_affine_layers([q1, q2])
    lo, hi = random_box(3, 2, 9, width=1.5)
    x = samples_in(lo, hi, 1, 3)[0]
    best = region_argmax(layers, x, lo, hi)
    assert ((best >= lo) & (best <= hi)).all()
    n = 3000
    xs = samples_in(lo, hi, n, 4)  # (n, B, d)

    def patterns(points: torch.Tensor) -> torch.Tensor:  # (n, B, units)
        zs = [
            torch.cat([z > 0 for z in net.pre_activations(points.reshape(-1, 2))], dim=1)
            for net in layers
        ]
        return torch.cat(zs, dim=1).reshape(points.shape[0], 3, -1)

    same = (patterns(xs) == patterns(x[None])).all(dim=2)
    values = objective_value(layers, xs.reshape(-1, 2)).reshape(n, 3)
    region_max = torch.where(same, values, -math.inf).amax(dim=0)
    found = objective_value(layers, best)
    assert (found >= objective_value(layers, x) - 1e-12).all()
    assert (found >= region_max - 1e-9).all()


# --------------------------------------------------------------------------------------
# maximize(method="milp") and maximize(..., bound=True)
# --------------------------------------------------------------------------------------
def _critic_problem(seed: int = 0):
    torch.manual_seed(seed)
    critic = nn.Sequential(
        nn.Linear(5, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 1)
    )
    s, a0 = torch.randn(6, 3), torch.zeros(6, 2)
    # CEM evaluates population copies of the batch at once: repeat the observations.
    return critic, (lambda a: critic(torch.cat([s.repeat(len(a) // len(s), 1), a], 1))), a0


def test_maximize_milp_is_the_certified_maximum_and_beats_every_heuristic():
    from adr_rl import maximize

    critic, fn, a0 = _critic_problem()
    exact = maximize(fn, a0, -1.0, 1.0, method="milp", network=critic)
    assert exact.info["status"] == ["optimal"] * 6 and exact.method == "milp"
    assert exact.upper_bound is not None and exact.upper_bound.dtype == torch.float64
    assert torch.all(exact.upper_bound - exact.value.double() <= 1e-5)
    assert torch.all(exact.value >= exact.initial_value)
    for method in ("gd", "pgd", "apgd", "adam", "cem", "adr", "adr_sync"):
        res = maximize(fn, a0, -1.0, 1.0, steps=60, method=method, network=critic, bound=True)
        assert torch.all(res.value.double() <= exact.value.double() + 1e-5), method
        assert torch.all(res.value.double() <= res.upper_bound + 1e-5), method
        assert torch.all(res.upper_bound >= exact.upper_bound - 1e-9), method  # CROWN is looser


def test_maximize_milp_and_bound_refuse_what_they_cannot_certify():
    from adr_rl import maximize

    critic, fn, a0 = _critic_problem()
    with pytest.raises(ValueError, match="drop objective="):
        maximize(fn, a0, -1.0, 1.0, method="milp", network=critic, objective=lambda o, x: -o[:, 0])
    with pytest.raises(ValueError, match="finite lower and upper"):
        maximize(fn, a0, method="milp", network=critic)
    with pytest.raises(ValueError, match="no evaluation budget"):
        from adr_rl import network_evaluations

        network_evaluations("milp", 10)
    tanh = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    with pytest.raises(TypeError, match="Tanh"):
        maximize(tanh, torch.zeros(2, 3), -1.0, 1.0, steps=2, method="gd", bound=True)
