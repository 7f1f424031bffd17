"""See and gate the ReLUs of any PyTorch module (docs/method.md, ingredients 1-2).

ADR needs two views of one network: the *real* network ``f(x)`` (to read the
activation pattern and score iterates) and the *sigmoid-surrogate* ``f_hat(x, eta)``
in which every ``relu(z)`` becomes ``g(eta) * z``. Rather than rebuilding the
network (the public proof of concept converts convolutions to dense layers), this
module attaches temporary hooks to the user's ``nn.ReLU`` modules, so MLPs, CNNs
and residual blocks are all handled with memory linear in the activations.

A ReLU *site* is one call of one ``nn.ReLU`` module during a forward pass, so a
module reused at several places gets one gate tensor per place.

:class:`ReluSurrogate` is a context manager: on entry it puts the network in eval
mode, freezes its parameters and installs the hooks; on exit (also after an
exception) it restores every ``training`` flag and ``requires_grad`` exactly and
removes its hooks, so the user's network is left as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "NonReluNetworkError",
    "ReluSite",
    "ReluSurrogate",
    "eval_mode",
    "find_relus",
]

# Element-wise non-linearities that ADR cannot relax when they are called outside an
# ``nn.ReLU`` module. Max-pooling is deliberately absent: it is piecewise linear and
# its switches are treated like the rest of the (locally linear) network.
_FUNCTIONAL_NONLINEARITIES: dict[Callable[..., Any], str] = {}
for _name in (
    "relu",
    "relu_",
    "relu6",
    "leaky_relu",
    "leaky_relu_",
    "elu",
    "elu_",
    "selu",
    "celu",
    "gelu",
    "silu",
    "mish",
    "softplus",
    "hardtanh",
    "hardswish",
    "hardsigmoid",
    "tanh",
    "sigmoid",
    "threshold",
    "prelu",
    "rrelu",
):
    for _namespace, _label in (
        (torch, "torch"),
        (torch.nn.functional, "F"),
        (torch.Tensor, "Tensor"),
    ):
        _fn = getattr(_namespace, _name, None)
        if _fn is not None:
            _FUNCTIONAL_NONLINEARITIES[_fn] = f"{_label}.{_name}"

_ACTIVATION_MODULES = (
    nn.ELU,
    nn.GELU,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Hardtanh,
    nn.LeakyReLU,
    nn.Mish,
    nn.PReLU,
    nn.ReLU6,
    nn.RReLU,
    nn.SELU,
    nn.CELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Softplus,
    nn.Tanh,
)


#: ``(site index, pre-activation z) -> the site's output``, see :meth:`ReluSurrogate.gated`.
SiteFn = Callable[[int, torch.Tensor], torch.Tensor]


class NonReluNetworkError(ValueError):
    """The network is not a ReLU network that ADR can relax (see the message)."""


@dataclass(frozen=True)
class ReluSite:
    """One call of an ``nn.ReLU`` module during a forward pass.

    :param name: qualified module name, with ``#k`` for the k-th reuse of a module.
    :param shape: per-problem shape of the pre-activation (batch dimension removed).
    """

    name: str
    shape: tuple[int, ...]


def find_relus(modules: Sequence[nn.Module]) -> list[tuple[str, nn.ReLU]]:
    """Return ``(qualified name, module)`` for every ``nn.ReLU`` inside ``modules``.

    :raises NonReluNetworkError: if there is none, or if the network holds other
        activation modules (Tanh, GELU, ...), which ADR cannot relax.
    """
    relus: list[tuple[str, nn.ReLU]] = []
    seen: set[int] = set()
    for k, root in enumerate(modules):
        prefix = f"[{k}]." if len(modules) > 1 else ""
        for name, module in root.named_modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            if isinstance(module, nn.ReLU):
                relus.append((prefix + (name or type(root).__name__), module))
            elif isinstance(module, _ACTIVATION_MODULES):
                raise NonReluNetworkError(
                    f"module {prefix + name!r} is a {type(module).__name__}; ADR relaxes only "
                    "nn.ReLU activations (the network must be piecewise linear)"
                )
    if not relus:
        raise NonReluNetworkError(
            "the network has no nn.ReLU modules; ADR relaxes ReLUs that are nn.ReLU modules. "
            "If the network calls F.relu/torch.relu in forward(), replace those calls with "
            "nn.ReLU() modules"
        )
    return relus


class _NonlinearityScan(TorchFunctionMode):
    """Record element-wise non-linearities called outside the hooked ReLU modules."""

    def __init__(self, surrogate: ReluSurrogate) -> None:
        super().__init__()
        self.surrogate = surrogate
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        label = _FUNCTIONAL_NONLINEARITIES.get(func)
        if label is not None and self.surrogate._network_depth > 0 and not self.surrogate._in_relu:
            self.found.append(label)
        return func(*args, **(kwargs or {}))


class ReluSurrogate:
    """Context manager exposing the real and the gated (sigmoid-surrogate) network.

    Inside the context, every evaluation goes through :meth:`real` or :meth:`gated`::

        with ReluSurrogate([net]) as s:
            value, signs = s.real(lambda: net(x))           # real ReLUs, records z > 0
            out, zs = s.gated(lambda: net(x), gates)        # relu(z) -> gates[i] * z

    :param modules: the module(s) whose ``nn.ReLU`` sites are relaxed. Other code
        in the evaluated callable (an objective on the output, a critic's input
        concatenation) is left alone.
    :param relax: install the ReLU hooks (and raise :class:`NonReluNetworkError` unless
        ``modules`` form a ReLU network). Methods that never evaluate the surrogate
        (gradient ascent, PGD, ...) pass ``False``: *plain* mode, any differentiable
        network, frozen and restored all the same, :meth:`real` only, no records.
    """

    def __init__(self, modules: Sequence[nn.Module], relax: bool = True) -> None:
        if isinstance(modules, nn.Module):
            modules = [modules]
        if not modules or not all(isinstance(m, nn.Module) for m in modules):
            raise TypeError("network must be an nn.Module or a non-empty sequence of nn.Module")
        self.modules = list(modules)
        self.relaxable = relax
        self.relus = find_relus(self.modules) if relax else []
        self._names = {id(m): n for n, m in self.relus}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._saved_training: list[tuple[nn.Module, bool]] = []
        self._saved_requires_grad: list[tuple[nn.Parameter, bool]] = []
        self._mode: str = "off"
        self._gates: Sequence[torch.Tensor] = ()
        self._gate_shapes: Sequence[torch.Size | tuple[int, ...]] = ()
        self._site_fn: SiteFn | None = None
        self._records: list[torch.Tensor] = []
        self._site_names: list[str] = []
        self._calls: dict[int, int] = {}
        self._in_relu = False
        self._network_depth = 0
        self.sites: list[ReluSite] | None = None

    # -- context management: the user's network is restored exactly on exit ----------
    def __enter__(self) -> ReluSurrogate:
        try:
            for root in self.modules:
                for module in root.modules():
                    self._saved_training.append((module, module.training))
                for p in root.parameters():
                    self._saved_requires_grad.append((p, p.requires_grad))
            for root in self.modules:
                root.eval()  # dropout/batch-norm statistics must not move during optimization
                for p in root.parameters():
                    p.requires_grad_(False)  # gradients are taken w.r.t. the input only
                if self.relaxable:  # the depth count serves scan_nonlinearities only
                    self._handles.append(root.register_forward_pre_hook(self._enter_network))
                    self._handles.append(root.register_forward_hook(self._leave_network))
            for _, relu in self.relus:
                self._handles.append(relu.register_forward_pre_hook(self._pre_hook))
                self._handles.append(relu.register_forward_hook(self._post_hook))
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module, training in self._saved_training:
            module.training = training
        for p, requires_grad in self._saved_requires_grad:
            p.requires_grad_(requires_grad)
        self._saved_training.clear()
        self._saved_requires_grad.clear()

    # -- hooks -----------------------------------------------------------------------
    def _enter_network(self, module: nn.Module, args: Any) -> None:
        self._network_depth += 1

    def _leave_network(self, module: nn.Module, args: Any, output: Any) -> None:
        self._network_depth -= 1

    def _pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> Any:
        self._in_relu = True
        (z,) = args
        k = self._calls.get(id(module), 0)
        self._calls[id(module)] = k + 1
        name = self._names[id(module)] + (f"#{k}" if k else "")
        self._site_names.append(name)
        if self._mode == "real":
            self._records.append(z > 0)  # before an inplace ReLU overwrites z
            return None
        if self._mode == "gated":
            self._records.append(z)
            # The ReLU's own output is replaced by the post-hook: hand it an empty tensor
            # so it costs nothing (and an inplace ReLU cannot clobber z, which we reuse).
            return (z.new_empty(0),)
        return None

    def _post_hook(self, module: nn.Module, args: Any, output: torch.Tensor) -> Any:
        self._in_relu = False
        if self._mode != "gated":
            return None
        i = len(self._records) - 1
        if i >= len(self._gate_shapes):
            raise NonReluNetworkError(
                "the network calls more ReLU sites than it did at initialization "
                "(data-dependent control flow is not supported)"
            )
        z = self._records[i]
        shape = self._gate_shapes[i]
        if shape != z.shape[1:]:
            raise NonReluNetworkError(
                f"ReLU site {self._site_names[i]!r} changed shape from {tuple(shape)} "
                f"to {tuple(z.shape[1:])} between calls"
            )
        if self._site_fn is not None:
            return self._site_fn(i, z)
        return self._gates[i] * z

    @contextlib.contextmanager
    def _evaluation(self, mode: str, gates: Sequence[torch.Tensor] | SiteFn = ()) -> Iterator[None]:
        self._mode = mode
        if callable(gates):
            if self.sites is None:
                raise ValueError("call real() once before gated() with a site function")
            self._site_fn, self._gate_shapes = gates, [s.shape for s in self.sites]
        else:
            self._gates, self._gate_shapes = gates, [g.shape[1:] for g in gates]
        self._records, self._site_names, self._calls = [], [], {}
        self._in_relu, self._network_depth = False, 0
        try:
            yield
        finally:
            self._mode, self._gates, self._gate_shapes, self._site_fn = "off", (), (), None
            # Hand the records to the caller only: kept here they would hold the pass's
            # graph alive, and leak out of a torch.compile'd step.
            self._records = []

    # -- evaluations -------------------------------------------------------------------
    def real(
        self, fn: Callable[[], torch.Tensor], record: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Evaluate ``fn`` with real ReLUs; with ``record``, also return each site's
        activation pattern ``z > 0`` (``(B, *site.shape)`` bool), else an empty list."""
        with self._evaluation("real" if record else "off"):
            out = fn()
            records, names = self._records, self._site_names
        if record and self.relaxable:
            self._check_sites(records)
        elif self.sites is not None and len(names) != len(self.sites):
            raise NonReluNetworkError(
                "the network's ReLU call sequence changed between calls "
                "(data-dependent control flow is not supported)"
            )
        return out, records

    def gated(
        self, fn: Callable[[], torch.Tensor], gates: Sequence[torch.Tensor] | SiteFn
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Evaluate ``fn`` with ``relu(z) -> gates[i] * z``; also return each site's ``z``.

        :param gates: one tensor per site, shaped like that site's pre-activation
            ``(B, *site.shape)``, values in [0, 1]; or a function ``(i, z) -> output``
            that replaces site ``i``'s ReLU (after :meth:`real` has seen the sites), so a
            caller can fuse its own per-site work (ADR's consistency term) into the pass.
        """
        if not self.relaxable:
            raise RuntimeError("gated() needs ReluSurrogate(..., relax=True)")
        with self._evaluation("gated", gates):
            out = fn()
            records = self._records
            expected = len(self._gate_shapes)
        if len(records) != expected:
            raise NonReluNetworkError(
                f"the network called {len(records)} ReLU sites but {expected} gates were "
                "given (data-dependent control flow is not supported)"
            )
        return out, records

    def _check_sites(self, records: list[torch.Tensor]) -> None:
        sites = [
            ReluSite(n, tuple(r.shape[1:])) for n, r in zip(self._site_names, records, strict=True)
        ]
        if not sites:
            raise NonReluNetworkError(
                "evaluating the objective called none of the network's nn.ReLU modules; pass "
                "the module the objective actually uses as `network`"
            )
        if self.sites is None:
            self.sites = sites
        elif [s.shape for s in sites] != [s.shape for s in self.sites]:
            raise NonReluNetworkError(
                "the network's ReLU call sequence changed between calls "
                "(data-dependent control flow is not supported)"
            )

    def scan_nonlinearities(self, fn: Callable[[], torch.Tensor]) -> None:
        """Raise if ``fn`` calls an element-wise non-linearity inside the network that
        is not an ``nn.ReLU`` module (e.g. ``F.relu`` or ``torch.tanh`` in ``forward``).

        Such a call is invisible to the hooks: the surrogate would silently keep it
        unrelaxed, so ADR's activation variables would not describe the network.
        """
        if not self.relaxable:
            raise RuntimeError("scan_nonlinearities() needs ReluSurrogate(..., relax=True)")
        scan = _NonlinearityScan(self)
        with self._evaluation("off"), scan:
            fn()
        if scan.found:
            found = sorted(set(scan.found))
            raise NonReluNetworkError(
                f"the network calls {', '.join(found)} in its forward(); ADR can only relax "
                "ReLUs that are nn.ReLU modules. Replace functional calls such as F.relu(x) "
                "with an nn.ReLU() module (other non-linearities are not supported)"
            )


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside; every submodule's ``training`` flag restored exactly after (also
    after an exception), so a user's model in train mode comes back in train mode."""
    saved = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training
