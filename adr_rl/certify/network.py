"""ReLU networks as lists of affine layers, and the affine map that feeds them.

The exact and certified tools of :mod:`adr_rl.certify` work on the weights, not on
the module: :func:`extract_relu_network` reads a module built from ``nn.Linear`` and
``nn.ReLU`` (``nn.Sequential`` nests, ``nn.Flatten`` of flat inputs, ``nn.Identity``)
into a float64 :class:`ReluNetwork`, without touching the module.

The variable ``x`` need not be the network's input. A critic ``Q(s, a)`` is maximized
over the action with the state's features fixed, i.e. over ``u = cat(features, a)``:
an :class:`InputMap` ``u = P x + q`` per problem row. :func:`prefix_input_map` builds
that map for the critic form; :func:`probe_input_map` recovers it from any callable
that uses the network (SB3's ``a -> Q(s, a)``), by recording the network's input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "InputMap",
    "ReluNetwork",
    "AffineLayers",
    "UnsupportedLayerError",
    "affine_layers",
    "as_affine_layers",
    "extract_relu_network",
    "objective_value",
    "prefix_input_map",
    "probe_input_map",
]

DTYPE = torch.float64


class UnsupportedLayerError(TypeError):
    """The module holds a layer the exact path cannot represent (see the message)."""


@dataclass(frozen=True)
class ReluNetwork:
    """``f(u) = W_L relu(... relu(W_1 u + b_1) ...) + b_L`` in float64 on the CPU.

    :param weights: ``W_l``: ``(n_l, n_{l-1})`` float64, ``n_0`` the input size.
    :param biases: ``b_l``: ``(n_l,)`` float64. A ReLU follows every layer but the last.
    """

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.biases) or not self.weights:
            raise ValueError("need one bias per weight matrix and at least one layer")
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if w.dim() != 2 or b.shape != (w.shape[0],):
                raise ValueError(f"layer {i}: weight (n_out, n_in) and bias (n_out,) expected")
            if i and w.shape[1] != self.weights[i - 1].shape[0]:
                raise ValueError(f"layer {i}: input size {w.shape[1]} does not match")

    @property
    def input_dim(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def output_dim(self) -> int:
        return int(self.weights[-1].shape[0])

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(int(w.shape[0]) for w in self.weights[:-1])

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``(B, input_dim)`` -> ``(B, output_dim)`` float64, the real network."""
        h = u.to(DTYPE)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = h.clamp_min(0.0)
        return h

    def pre_activations(self, u: torch.Tensor) -> list[torch.Tensor]:
        """Hidden pre-activations ``z_l``: ``(B, n_l)`` float64 per hidden layer."""
        h, out = u.to(DTYPE), []
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            z = h @ w.T + b
            out.append(z)
            h = z.clamp_min(0.0)
        return out


@dataclass(frozen=True)
class InputMap:
    """The network input as an affine function of the variable, per problem row:
    ``u_b = P_b x_b + q_b``.

    :param matrix: ``P``: ``(B, d_u, d_x)`` float64.
    :param offset: ``q``: ``(B, d_u)`` float64.
    """

    matrix: torch.Tensor
    offset: torch.Tensor

    def __post_init__(self) -> None:
        if self.matrix.dim() != 3 or self.offset.shape != self.matrix.shape[:2]:
            raise ValueError("InputMap needs matrix (B, d_u, d_x) and offset (B, d_u)")

    @property
    def batch(self) -> int:
        return int(self.matrix.shape[0])

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, d_x)`` -> ``(B, d_u)`` float64."""
        return torch.einsum("bux,bx->bu", self.matrix, x.to(DTYPE)) + self.offset


def _walk(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _walk(child, f"{prefix}.{name}" if prefix else name)
    else:
        yield prefix or type(module).__name__, module


def extract_relu_network(module: nn.Module) -> ReluNetwork:
    """Read a ReLU MLP into float64 weights; the module is only read.

    Supported: ``nn.Linear`` and ``nn.ReLU`` in (nested) ``nn.Sequential``s, plus
    ``nn.Identity`` and ``nn.Flatten`` (the inputs are flat vectors, so it is the
    identity). Consecutive linear layers are multiplied out; the output layer must be
    linear (no ReLU after the last ``nn.Linear``).

    :raises UnsupportedLayerError: any other layer (convolutions, pooling, other
        activations, custom modules whose ``forward`` order is unknown), naming it.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(module).__name__}")
    weights: list[torch.Tensor] = []
    biases: list[torch.Tensor] = []
    pending: tuple[torch.Tensor, torch.Tensor] | None = None  # affine since the last ReLU
    for name, layer in _walk(module, ""):
        if isinstance(layer, nn.Linear):
            w = layer.weight.detach().to("cpu", DTYPE).clone()
            b = (
                layer.bias.detach().to("cpu", DTYPE).clone()
                if layer.bias is not None
                else torch.zeros(w.shape[0], dtype=DTYPE)
            )
            pending = (w, b) if pending is None else (w @ pending[0], w @ pending[1] + b)
        elif isinstance(layer, nn.ReLU):
            if pending is None:
                raise UnsupportedLayerError(
                    f"layer {name!r}: a ReLU must follow an nn.Linear (a ReLU on the input "
                    "or two ReLUs in a row are not supported by the exact path)"
                )
            weights.append(pending[0])
            biases.append(pending[1])
            pending = None
        elif isinstance(layer, (nn.Identity, nn.Flatten)):
            continue
        else:
            hint = (
                "; convolutions are supported only through interval bounds of the "
                "observation attacks, not by the MILP or CROWN here"
                if isinstance(layer, nn.modules.conv._ConvNd)
                else ""
            )
            raise UnsupportedLayerError(
                f"layer {name!r} ({type(layer).__name__}) is not supported: the exact and "
                "certified tools take nn.Linear / nn.ReLU / nn.Flatten / nn.Identity inside "
                f"nn.Sequential{hint}"
            )
    if pending is None:
        raise UnsupportedLayerError(
            "the network must end with an nn.Linear output layer (found no layer after the "
            "last ReLU); append nn.Linear or drop the final ReLU"
        )
    weights.append(pending[0])
    biases.append(pending[1])
    return ReluNetwork(tuple(weights), tuple(biases))


def prefix_input_map(
    prefix: torch.Tensor, x_dim: int, suffix: torch.Tensor | None = None
) -> InputMap:
    """``u = cat(prefix, x, suffix)`` per row: the critic form ``Q(cat(features, a))``.

    :param prefix: ``(B, d_s)`` float: the fixed part before the variable (SB3: the
        critic's features of the observation).
    :param x_dim: size of the variable ``x`` (SB3: the action size).
    :param suffix: optional ``(B, d_t)`` float fixed part after the variable.
    """
    if prefix.dim() != 2:
        raise ValueError(f"prefix must be (B, d_s), got shape {tuple(prefix.shape)}")
    batch, ds = prefix.shape
    tail = suffix if suffix is not None else prefix.new_zeros(batch, 0)
    if tail.dim() != 2 or tail.shape[0] != batch:
        raise ValueError(f"suffix must be (B, d_t) with B={batch}, got {tuple(tail.shape)}")
    du = ds + x_dim + tail.shape[1]
    matrix = torch.zeros(batch, du, x_dim, dtype=DTYPE)
    matrix[:, ds : ds + x_dim, :] = torch.eye(x_dim, dtype=DTYPE)
    offset = torch.zeros(batch, du, dtype=DTYPE)
    offset[:, :ds] = prefix.detach().to("cpu", DTYPE)
    offset[:, ds + x_dim :] = tail.detach().to("cpu", DTYPE)
    return InputMap(matrix, offset)


def _record_inputs(
    fn: Callable[[torch.Tensor], torch.Tensor], networks: Sequence[nn.Module], x: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Call ``fn(x)`` and return each network's (single) input and fn's output."""
    seen: list[list[torch.Tensor]] = [[] for _ in networks]
    handles = []
    try:
        for i, net in enumerate(networks):

            def hook(_mod: nn.Module, args: tuple, i: int = i) -> None:
                seen[i].append(args[0].detach().to("cpu", DTYPE).clone())

            handles.append(net.register_forward_pre_hook(hook))
        with torch.no_grad():
            out = fn(x)
    finally:
        for h in handles:
            h.remove()
    inputs = []
    for i, calls in enumerate(seen):
        if len(calls) != 1:
            raise ValueError(
                f"network {i} was called {len(calls)} times by fn; the exact path needs each "
                "network called exactly once per fn call (pass the modules fn really uses)"
            )
        if calls[0].dim() != 2 or calls[0].shape[0] != x.shape[0]:
            raise ValueError(
                f"network {i} received input of shape {tuple(calls[0].shape)}; the exact path "
                f"needs flat (B, d_u) inputs with B = {x.shape[0]}"
            )
        inputs.append(calls[0])
    if not isinstance(out, torch.Tensor):
        raise TypeError("fn must return a tensor of shape (B,) or (B, 1)")
    return inputs, out.detach().to("cpu", DTYPE).reshape(x.shape[0], -1)


def probe_input_map(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    networks: nn.Module | Sequence[nn.Module],
    seed: int = 0,
) -> tuple[list[InputMap], torch.Tensor]:
    """Recover ``u_k = P_k x + q_k`` for each network ``k`` that ``fn`` calls, by probing.

    ``fn`` is called at ``x0``, at ``x0 + e_j`` for every coordinate ``j`` and at a
    random point, with a temporary forward pre-hook on each network recording its input
    (removed in ``finally``; nothing else about the networks changes). The map read from
    the first ``d + 1`` calls must predict the input at the random point.

    :param fn: callable ``(B, d) -> (B,) or (B, 1)`` that calls each network once.
    :param x0: ``(B, d)`` float tensor on fn's device.
    :param networks: the module(s) fn feeds (e.g. SB3's ``critic.q_networks``).
    :param seed: seed of the random check point.
    :return: one :class:`InputMap` per network, and ``fn(x0)`` as ``(B, k)`` float64.
    :raises ValueError: a network's input is not affine in ``x``, or a network is not
        called exactly once per fn call.
    """
    nets = [networks] if isinstance(networks, nn.Module) else list(networks)
    if not nets:
        raise ValueError("pass at least one network")
    if x0.dim() != 2:
        raise ValueError(f"x0 must be (B, d), got shape {tuple(x0.shape)}")
    base, out0 = _record_inputs(fn, nets, x0)
    d = x0.shape[1]
    columns: list[list[torch.Tensor]] = [[] for _ in nets]
    for j in range(d):
        step = torch.zeros_like(x0)
        step[:, j] = 1.0
        inputs, _ = _record_inputs(fn, nets, x0 + step)
        for k, u in enumerate(inputs):
            columns[k].append(u - base[k])
    maps = []
    for k in range(len(nets)):
        matrix = torch.stack(columns[k], dim=2)  # (B, d_u, d)
        offset = base[k] - torch.einsum("bux,bx->bu", matrix, x0.detach().to("cpu", DTYPE))
        maps.append(InputMap(matrix, offset))
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=gen, dtype=DTYPE).to(x0.device, x0.dtype)
    x1 = x0 + noise
    checks, _ = _record_inputs(fn, nets, x1)
    eps = torch.finfo(x0.dtype).eps
    for k, (m, u) in enumerate(zip(maps, checks, strict=True)):
        predicted = m.apply(x1.detach().cpu())
        scale = 1.0 + base[k].abs().amax() + u.abs().amax()
        if (predicted - u).abs().amax() > 1e3 * eps * scale * (d + 1):
            raise ValueError(
                f"network {k}'s input is not an affine function of x (the probed map misses "
                f"by {(predicted - u).abs().amax():.3g} at a random point): the exact path "
                "needs u = P x + q, e.g. the critic's features fixed and the action as x"
            )
    return maps, out0


@dataclass(frozen=True)
class AffineLayers:
    """A :class:`ReluNetwork` with its input map multiplied into the first layer, per row.

    :param weights: ``W_l``: ``(B_l, n_l, n_{l-1})`` float64 with ``B_l`` either the
        batch ``B`` (the first layer, once composed with an :class:`InputMap`) or 1
        (shared by every row); ``n_0`` is the size of the variable ``x``.
    :param biases: ``b_l``: ``(B_l, n_l)`` float64.
    """

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(int(w.shape[1]) for w in self.weights[:-1])

    def row(self, b: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Problem ``b``'s weights ``(n_l, n_{l-1})`` and biases ``(n_l,)``."""
        pick = [w[b if w.shape[0] > 1 else 0] for w in self.weights]
        return pick, [c[b if c.shape[0] > 1 else 0] for c in self.biases]

    def select(self, b: int) -> AffineLayers:
        """Problem ``b``'s layers alone (batch dimension 1)."""
        ws, bs = self.row(b)
        return AffineLayers(tuple(w[None] for w in ws), tuple(c[None] for c in bs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, d_x)`` -> ``(B, n_out)`` float64, the real network of the variable."""
        h = x.to(DTYPE)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.einsum("boi,bi->bo", w, h) + b
            if i < len(self.weights) - 1:
                h = h.clamp_min(0.0)
        return h

    def pre_activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Hidden pre-activations ``z_l``: ``(B, n_l)`` float64 per hidden layer."""
        h, out = x.to(DTYPE), []
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            z = torch.einsum("boi,bi->bo", w, h) + b
            out.append(z)
            h = z.clamp_min(0.0)
        return out


def affine_layers(net: ReluNetwork, input_map: InputMap | None = None) -> AffineLayers:
    """``net`` as a function of the variable ``x`` (``u = P x + q`` folded into layer 1)."""
    ws = [w.unsqueeze(0) for w in net.weights]
    bs = [b.unsqueeze(0) for b in net.biases]
    if input_map is not None:
        if input_map.matrix.shape[1] != net.input_dim:
            raise ValueError(
                f"the input map gives inputs of size {input_map.matrix.shape[1]}, the network "
                f"takes {net.input_dim}"
            )
        w1, b1 = net.weights[0], net.biases[0]
        ws[0] = torch.einsum("ou,bux->box", w1, input_map.matrix)
        bs[0] = input_map.offset @ w1.T + b1
    return AffineLayers(tuple(ws), tuple(bs))


def objective_value(layers: Sequence[AffineLayers], x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` float64: ``min_k f_k(x)`` of one-output networks at ``x`` ``(B, d)``."""
    return torch.stack([n.forward(x)[:, 0] for n in layers], dim=1).amin(dim=1)


def as_affine_layers(
    networks: nn.Module | ReluNetwork | Sequence[nn.Module | ReluNetwork],
    input_map: InputMap | Sequence[InputMap] | None = None,
    prefix: torch.Tensor | None = None,
    x_dim: int | None = None,
) -> list[AffineLayers]:
    """The networks (modules are read, not changed) as functions of the variable ``x``.

    :param networks: one network or several (combined by ``min`` by the solvers).
    :param input_map: ``u = P x + q`` (one for all networks, or one per network).
    :param prefix: ``(B, d_s)``: shorthand for ``u = cat(prefix, x)`` (the critic form);
        needs ``x_dim``.
    """
    nets = [networks] if isinstance(networks, (nn.Module, ReluNetwork)) else list(networks)
    if not nets:
        raise ValueError("pass at least one network")
    relu_nets = [n if isinstance(n, ReluNetwork) else extract_relu_network(n) for n in nets]
    if prefix is not None:
        if input_map is not None:
            raise ValueError("pass prefix= or input_map=, not both")
        if x_dim is None:
            raise ValueError("prefix= needs the variable's size x_dim")
        input_map = prefix_input_map(prefix, x_dim)
    maps: list[InputMap | None]
    if input_map is None or isinstance(input_map, InputMap):
        maps = [input_map] * len(relu_nets)
    else:
        maps = list(input_map)
        if len(maps) != len(relu_nets):
            raise ValueError(f"{len(maps)} input maps for {len(relu_nets)} networks")
    return [affine_layers(n, m) for n, m in zip(relu_nets, maps, strict=True)]
