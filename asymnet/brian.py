"""A recurrent Gaussian operator as a Brian2 network: export, run, the local rule as synaptic code, import.

One Brian2 time step is one operator step (paper sec. 3.3, :class:`~asymnet.operators.GaussianOperator`):

    s_i' = (1 - alpha) s_i + alpha (sum_j W_ij phi_j(s_j) + b_i + w_T,i log T) + g(T) softplus(sigma_i) xi_i,

xi_i ~ N(0, 1), g(T) = T ** noise_exponent (0.5 for "sqrt_T", 1 for "T"). Brian2 holds it as

- a ``NeuronGroup`` of n_chains * n_units neurons, neuron ``chain * n_units + unit``, with per-neuron
  ``b``, ``w_T``, ``sigma`` (pre-softplus), ``visible``, ``clamped``, ``clamp_value``, and shared ``alpha``,
  ``T``, ``noise_exponent``; phi_j is ``phi_visible`` on visible units, ``phi`` on hidden ones;
- a ``Synapses`` object with one synapse per (pre j, post i) pair inside each chain (block diagonal: the
  chains are independent), weight ``w`` = W_ij, and the summed variable ``recurrent_post = w * rate_pre``.

Order within a step: Brian2 computes a summed variable in the ``groups`` slot (order = target order - 1)
from the state at the step's start; the state update runs after it, in a ``run_regularly`` at ``end``,
so sum_j W_ij phi(s_j) is always that of the current s. Monitors sit at ``start`` and see s before the step.

Targets: "numpy" (no compiler), "cython", and "cpp_standalone" (one run per build). Everything is float64.

:func:`local_rule_replay` writes the Variational Walkback update of :mod:`asymnet.plasticity` as synaptic
code and replays it along heating trajectories recorded from torch, one example per Brian2 step through a
single chain, so one copy of W learns from the whole minibatch; :func:`import_network` reads a Brian2
network back into a :class:`~asymnet.networks.recurrent.RecurrentNetwork`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import brian2
import numpy as np
import torch
from brian2.devices.device import all_devices, reset_device

from asymnet.errors import AsymnetError
from asymnet.metrics.balance import EntropyProductionEstimate
from asymnet.networks.recurrent import RecurrentNetwork
from asymnet.operators import Drive, GaussianOperator

TARGETS = ("numpy", "cython", "cpp_standalone")

# phi as Brian2 code of the membrane variable {s}
RATE_CODE = {
    "tanh": "tanh({s})",
    "sigmoid": "1 / (1 + exp(-{s}))",
    "relu": "clip({s}, 0, inf)",
    "identity": "{s}",
    "softplus": "softplus({s})",
}
NOISE_EXPONENT = {"sqrt_T": 0.5, "T": 1.0}


class BrianExportError(AsymnetError):
    """The network, operator or argument has no Brian2 counterpart here; the message says which and why."""


def _check_exportable(network, operator) -> None:
    if not isinstance(network, RecurrentNetwork):
        raise BrianExportError(
            f"Brian2 export needs a RecurrentNetwork (F(s) = W phi(s) + b maps onto Synapses with a summed "
            f"variable); got {type(network).__name__}")
    if not isinstance(operator, GaussianOperator):
        raise BrianExportError(
            f"Brian2 export supports the GaussianOperator only (s' = (1 - alpha) s + alpha F(s) + std xi); "
            f"got {type(operator).__name__}")
    if network.pathway is not None:
        raise BrianExportError(
            "Brian2 export has no counterpart for a convolutional pathway (network.conv_channels): its fast "
            "hidden layers relax within a step and share each kernel across the image; export a network "
            "without one")
    if network.hidden_units != "slow":
        learned = " and learns them through feedback synapses B" if network.hidden_learning == "learned" else ""
        raise BrianExportError(
            "Brian2 export supports slow hidden units only (hidden_units='slow', part of the state); "
            f"hidden_units='fast' relaxes the hidden rates within a step{learned}, which one NeuronGroup "
            "update cannot do")
    if network.posterior_leak is not None:
        raise BrianExportError(
            "Brian2 export needs a fixed leak alpha; network.posterior_leak makes the share of the state a step "
            "keeps depend on the temperature, which the exported NeuronGroup's equations do not carry")
    if operator.noise_scaling not in NOISE_EXPONENT:
        raise BrianExportError(f"unknown noise_scaling {operator.noise_scaling!r}; "
                               f"expected one of {list(NOISE_EXPONENT)}")


def _codeobj_class(target: str):
    """The CodeObject class of a runtime target; None for cpp_standalone, whose device picks its own."""
    if target == "cpp_standalone":
        return None
    if target == "numpy":
        from brian2.codegen.runtime.numpy_rt import NumpyCodeObject
        return NumpyCodeObject
    if target == "cython":
        from brian2.codegen.runtime.cython_rt import CythonCodeObject
        return CythonCodeObject
    raise BrianExportError(f"target must be one of {TARGETS}; got {target!r}")


def _numpy_softplus(x):
    x = np.asarray(x)
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


# torch's softplus (beta 1, threshold 20) as a Brian2 function. Brian2's own log1p (2.9.0) formats its whole
# argument into an error message on every call, slower than the step itself for ~1000 neurons on numpy.
SOFTPLUS = brian2.Function(_numpy_softplus, arg_units=[1], return_unit=1)
SOFTPLUS.implementations.add_numpy_implementation(_numpy_softplus, discard_units=True)
SOFTPLUS.implementations.add_implementation("cython", """
cdef double softplus(double x):
    if x > 20:
        return x
    return log1p(exp(x))
""", name="softplus")
SOFTPLUS.implementations.add_implementation(
    "cpp", "double softplus(double x) { return x > 20 ? x : log1p(exp(x)); }", name="softplus")


def cython_available() -> bool:
    """Whether Brian2's Cython target compiles here (a C compiler and Cython); compiles a test once."""
    from brian2.codegen.runtime.cython_rt import CythonCodeObject
    return bool(CythonCodeObject.is_available())


def _check_dt(dt) -> None:
    if not brian2.have_same_dimensions(dt, brian2.second) or not float(dt) > 0:
        raise ValueError(f"dt must be a positive time, e.g. 1 * brian2.ms; got {dt!r}")


def _neuron_equations(network: RecurrentNetwork, state: str) -> str:
    """Equations shared by the sampling and the replay group; ``state`` declares s (a variable or a subexpression)."""
    return "\n".join([
        state,
        "rate_visible = " + RATE_CODE[network.phi_visible_name].format(s="s") + " : 1",
        "rate_hidden = " + RATE_CODE[network.phi_name].format(s="s") + " : 1",
        "rate = " + ("rate_hidden" if network.phi_visible_name == network.phi_name
                     else "int(visible) * rate_visible + int(not visible) * rate_hidden") + " : 1",
        "noise_level = " + RATE_CODE["softplus"].format(s="sigma") + " : 1",
        "std = T ** noise_exponent * noise_level : 1",
        "recurrent : 1",
        "b : 1",
        "w_T : 1",
        "sigma : 1",
        "visible : boolean (constant)",
        "unit : integer (constant)",
        "alpha : 1 (shared, constant)",
        "noise_exponent : 1 (shared, constant)",
        "temperature_input : boolean (shared, constant)",
        "learn_sigma : boolean (shared, constant)",
    ])


def _set_parameters(neurons, network: RecurrentNetwork, operator: GaussianOperator, n_copies: int) -> None:
    """Write alpha, b, w_T, sigma and the flags of ``network`` into ``neurons`` (n_copies blocks of n_units)."""
    n = network.n_units
    with torch.no_grad():
        b = network.b.detach().double().cpu().numpy()
        w_T = (network.w_T.detach().double().cpu().numpy() if network.w_T is not None else np.zeros(n))
        sigma = network.sigma.detach().double().cpu().numpy()
    neurons.b[:] = np.tile(b, n_copies)
    neurons.w_T[:] = np.tile(w_T, n_copies)
    neurons.sigma[:] = np.tile(sigma, n_copies)
    neurons.visible[:] = np.tile(np.arange(n) < network.n_visible, n_copies)
    neurons.unit[:] = np.tile(np.arange(n), n_copies)
    neurons.alpha = float(operator.alpha)
    neurons.noise_exponent = NOISE_EXPONENT[operator.noise_scaling]
    neurons.temperature_input = network.w_T is not None
    neurons.learn_sigma = bool(network.sigma_visible.requires_grad)


def _block_diagonal_synapses(neurons, n_units: int, n_copies: int, model: str, codeobj_class, clock, W: np.ndarray):
    """Synapses (pre j, post i) inside each block of n_units neurons, w = W[i, j]; created block by block, row-major."""
    # A runtime target connects with numpy: connecting runs once, a compilation for it is time lost; the
    # per-step code objects are made at run time, with the target. None: cpp_standalone generates everything.
    synapses = brian2.Synapses(neurons, neurons, model=model, clock=clock, namespace=neurons.namespace,
                               codeobj_class=codeobj_class and _codeobj_class("numpy"))
    post, pre = np.meshgrid(np.arange(n_units), np.arange(n_units), indexing="ij")
    offsets = (np.arange(n_copies) * n_units)[:, None]
    synapses.connect(i=(offsets + pre.ravel()).ravel(), j=(offsets + post.ravel()).ravel())
    synapses.codeobj_class = codeobj_class
    synapses.w[:] = np.tile(W.ravel(), n_copies)
    return synapses


def _weights_of_blocks(synapses, n_units: int) -> np.ndarray:
    """The synaptic weights as (n_copies, n_units, n_units) blocks W[c, post, pre], by Brian2's own i, j."""
    i, j, w = np.asarray(synapses.i[:]), np.asarray(synapses.j[:]), np.asarray(synapses.w[:])
    if np.any(i // n_units != j // n_units):
        raise BrianExportError("the Synapses connect neurons of different chains: expected block-diagonal connectivity")
    n_copies = len(synapses.source) // n_units
    if len(w) != n_copies * n_units * n_units:
        raise BrianExportError(f"expected {n_units} x {n_units} synapses in each of {n_copies} chains (W is full, "
                               f"self-connections included); got {len(w)} synapses")
    blocks = np.full((n_copies, n_units, n_units), np.nan)
    blocks[i // n_units, j % n_units, i % n_units] = w
    return blocks


class BrianOperator:
    """n_chains independent chains of one recurrent Gaussian operator, simulated by Brian2; built by :func:`export`.

    Shapes: states (n_chains, n_units) float64 (visible units first); weights (n_units, n_units), row i =
    postsynaptic unit i. ``network`` is the ``brian2.Network`` holding ``neurons`` and ``synapses``: a
    plain ``network.run(n_steps * dt)`` simulates without monitors (what a timing should measure).
    """

    def __init__(self, network: brian2.Network, neurons, synapses, n_chains: int, n_units: int, dt, noise_steps,
                 target: str):
        self.network, self.neurons, self.synapses = network, neurons, synapses
        self.n_chains, self.n_units, self.dt, self.target = n_chains, n_units, dt, target
        self._noise_steps = noise_steps
        self._standalone_done = False
        self.last_run_seconds: float | None = None

    @property
    def steps_done(self) -> int:
        """Operator steps simulated since export (Brian2 time / dt)."""
        return int(round(float(self.network.t / self.dt)))

    def run(self, n_steps: int, record: bool = False) -> torch.Tensor | None:
        """Simulate ``n_steps`` operator steps. With ``record``: the trajectory of this run, (n_steps + 1,
        n_chains, n_units) float64, the states before each step and the last state; its monitor exists for
        this run only (memory n_steps * n_chains * n_units * 8 bytes)."""
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0; got {n_steps}")
        if self._standalone_done:
            raise BrianExportError("a cpp_standalone network runs once (its binary is built for that run): "
                                   "export again to run more steps")
        if self._noise_steps is not None and self.steps_done + n_steps > self._noise_steps:
            raise BrianExportError(f"the injected noise covers {self._noise_steps} steps; {self.steps_done} are done "
                                   f"and {n_steps} more were asked")
        if not record:
            self._simulate(n_steps)
            return None
        monitor = brian2.StateMonitor(self.neurons, "s", record=True, when="start",
                                      codeobj_class=self.neurons.codeobj_class)
        self.network.add(monitor)
        try:
            self._simulate(n_steps)
            recorded = np.asarray(monitor.s[:]).T.reshape(n_steps, self.n_chains, self.n_units)
        finally:
            self.network.remove(monitor)
        return torch.cat([torch.from_numpy(recorded.copy()), self.states[None]])

    def _simulate(self, n_steps: int) -> None:
        """network.run over n_steps; last_run_seconds: its wall time, code generation included on a first run
        (runtime targets), or the binary's own simulation time without compilation (cpp_standalone)."""
        if self.target != "cpp_standalone":
            start = time.perf_counter()
            self.network.run(n_steps * self.dt, namespace={})
            self.last_run_seconds = time.perf_counter() - start
            return
        try:
            self.network.run(n_steps * self.dt, namespace={})  # builds, compiles and runs the binary
            self.last_run_seconds = float(brian2.get_device()._last_run_time)
        finally:
            self._standalone_done = True
            reset_device()  # back to the device before export; the arrays stay readable

    @property
    def states(self) -> torch.Tensor:
        """Current states, (n_chains, n_units) float64."""
        return torch.from_numpy(np.asarray(self.neurons.s[:]).reshape(self.n_chains, self.n_units).copy())

    def set_states(self, states: torch.Tensor) -> None:
        """Set the states (n_chains, n_units); clamped units keep their clamp values."""
        values = _as_numpy(states, (self.n_chains, self.n_units), "states")
        clamped = np.asarray(self.neurons.clamped[:]).reshape(self.n_chains, self.n_units)
        clamp_value = np.asarray(self.neurons.clamp_value[:]).reshape(self.n_chains, self.n_units)
        self.neurons.s[:] = np.where(clamped, clamp_value, values).ravel()

    @property
    def T(self) -> float:
        """The temperature of every chain (Brian2 shared variable ``T``)."""
        return float(self.neurons.variables["T"].get_value()[0])

    @T.setter
    def T(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"T must be > 0; got {value}")
        if self.target == "cpp_standalone":
            raise BrianExportError("cpp_standalone takes T at export (export(..., T=...)): its single run is built "
                                   "with it")
        self.neurons.T = float(value)

    def clamp(self, known: torch.Tensor, values: torch.Tensor) -> None:
        """Hold the ``known`` units (n_units,) or (n_chains, n_units) bool at ``values`` (n_chains, n_units),
        from now on at every step (inpainting, as :func:`asymnet.walkback.generate`); the others run free."""
        if self.target == "cpp_standalone":
            raise BrianExportError("clamping needs a runtime target (numpy or cython): cpp_standalone cannot read "
                                   "the state before its single run")
        known = torch.as_tensor(known, dtype=torch.bool).expand(self.n_chains, self.n_units)
        values = _as_numpy(values, (self.n_chains, self.n_units), "values")
        self.neurons.clamped[:] = known.numpy().ravel()
        self.neurons.clamp_value[:] = np.where(known.numpy(), values, 0.0).ravel()
        self.set_states(self.states)

    def unclamp(self) -> None:
        """Let every unit run free again."""
        self.neurons.clamped[:] = False

    @property
    def weights(self) -> torch.Tensor:
        """W (n_units, n_units) float64, row = postsynaptic; the chains must agree (BrianExportError otherwise)."""
        return torch.from_numpy(_one_chain(_weights_of_blocks(self.synapses, self.n_units), None, "weights"))

    def set_weights(self, W: torch.Tensor) -> None:
        """Give every chain the weights W (n_units, n_units), row = postsynaptic."""
        W = _as_numpy(W, (self.n_units, self.n_units), "W")
        i, j = np.asarray(self.synapses.i[:]), np.asarray(self.synapses.j[:])
        self.synapses.w[:] = W[j % self.n_units, i % self.n_units]

    def to_network(self) -> tuple[RecurrentNetwork, GaussianOperator]:
        """The operator as Brian2 holds it now, read back by :func:`import_network`."""
        return import_network(self.neurons, self.synapses)


def _as_numpy(x, shape: tuple[int, ...], name: str) -> np.ndarray:
    array = x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {array.shape}")
    return array


def _one_chain(blocks: np.ndarray, chain: int | None, name: str) -> np.ndarray:
    """blocks[chain] of per-chain values (n_chains, ...); with chain None, the values every chain holds
    (BrianExportError if they differ)."""
    if chain is not None:
        return blocks[chain].copy()
    if not np.array_equal(blocks, np.broadcast_to(blocks[:1], blocks.shape)):
        raise BrianExportError(f"the chains hold different {name}; pass chain= to read one of them")
    return blocks[0].copy()


def export(
    network: RecurrentNetwork,
    operator: GaussianOperator,
    n_chains: int = 1,
    T: float = 1.0,
    target: str = "numpy",
    noise: torch.Tensor | np.ndarray | None = None,
    states: torch.Tensor | None = None,
    seed: int | None = None,
    dt=1.0 * brian2.ms,
    build_directory: str | None = None,
) -> BrianOperator:
    """``network`` under ``operator`` as a Brian2 network of ``n_chains`` independent chains at temperature T.

    target: Brian2 code generation, "numpy" (no compiler), "cython" (compiled on the first run, cached), or
    "cpp_standalone": a C++ program built in ``build_directory`` (a fresh temporary one if None) and run
    once by the single ``run`` it allows. Export switches Brian2's global device to cpp_standalone and
    that run switches it back, so build nothing else with Brian2 in between; clamping and changing T are
    refused (set T here), and a later cpp_standalone export invalidates this one's arrays.
    noise: None draws xi with Brian2's ``randn()`` (``seed`` seeds Brian2's global generator, numpy's
    included); an array (n_steps, n_chains, n_units) of standard normals injects row k as the xi of
    operator step k counted from export (a TimedArray), for pathwise comparison with torch.
    states: initial states (n_chains, n_units), zeros if None. dt: the Brian2 time of one operator step
    (a time Quantity; it fixes only how Brian2 times read, not the dynamics).
    Raises :class:`BrianExportError` for a network or operator without a Brian2 counterpart here.
    """
    _check_exportable(network, operator)
    _check_dt(dt)
    if n_chains < 1:
        raise ValueError(f"n_chains must be >= 1; got {n_chains}")
    codeobj_class = _codeobj_class(target)
    if target == "cpp_standalone":
        standalone = all_devices["cpp_standalone"]
        standalone.reinit()  # a previous standalone run leaves the device spent
        brian2.set_device(standalone, build_on_run=True, directory=build_directory or tempfile.mkdtemp())
    n = network.n_units
    namespace, noise_steps = {"softplus": SOFTPLUS}, None
    if noise is None:
        xi = "randn()"
    else:
        values = noise.detach().cpu().double().numpy() if torch.is_tensor(noise) else np.asarray(noise, np.float64)
        if values.ndim != 3 or values.shape[1:] != (n_chains, n):
            raise ValueError(f"noise must be (n_steps, n_chains, n_units) = (n_steps, {n_chains}, {n}); "
                             f"got {values.shape}")
        noise_steps = values.shape[0]
        namespace["injected_noise"] = brian2.TimedArray(values.reshape(noise_steps, n_chains * n), dt=dt)
        xi = "injected_noise(t, i)"
    if seed is not None:
        brian2.seed(seed)
    clock = brian2.Clock(dt=dt)
    equations = _neuron_equations(network, "s : 1") + "\n" + "\n".join([
        "clamped : boolean",
        "clamp_value : 1",
        "T : 1 (shared)",
    ])
    neurons = brian2.NeuronGroup(n_chains * n, equations, clock=clock, codeobj_class=codeobj_class,
                                 namespace=namespace)
    _set_parameters(neurons, network, operator, n_chains)
    neurons.T = float(T)
    # Mean plus noise, in GaussianOperator.sample's order; the int() flags keep both branches exact. xi has its
    # own statement: numpy code splits an expression on a boolean flag and would call randn() in both halves.
    neurons.run_regularly(
        "xi = " + xi + "\n"
        "s = ((1 - alpha) * s + alpha * (recurrent + b + w_T * log(T)) + std * xi) * int(not clamped)"
        " + clamp_value * int(clamped)",
        when="end", codeobj_class=codeobj_class)
    W = network.W.detach().double().cpu().numpy()
    synapses = _block_diagonal_synapses(neurons, n, n_chains, "w : 1\nrecurrent_post = w * rate_pre : 1 (summed)",
                                        codeobj_class, clock, W)
    operator_ = BrianOperator(brian2.Network(neurons, synapses), neurons, synapses, n_chains, n, dt, noise_steps,
                              target)
    if states is not None:
        operator_.set_states(states)
    return operator_


def import_network(neurons, synapses, chain: int | None = None) -> tuple[RecurrentNetwork, GaussianOperator]:
    """(RecurrentNetwork, GaussianOperator) in float64 from a Brian2 group and synapses built by :func:`export`.

    Reads W (from ``w``), b, w_T, sigma, the visible/hidden split, phi and phi_visible (from the rate
    equations), alpha and g(T) (``noise_exponent``). ``chain`` picks one chain's parameters; None
    requires every chain to hold the same ones (else BrianExportError). Export then import is exact.
    """
    needed = {"neurons": (neurons, ("s", "rate_visible", "rate_hidden", "b", "w_T", "sigma", "visible", "unit",
                                    "alpha", "noise_exponent", "temperature_input", "learn_sigma")),
              "synapses": (synapses, ("w",))}
    for what, (group, variables) in needed.items():
        missing = [name for name in variables if name not in getattr(group, "variables", {})]
        if missing:
            raise BrianExportError(
                f"import_network reads the NeuronGroup and Synapses that asymnet.brian.export builds; these "
                f"{what} lack the variable(s) {', '.join(missing)}. Export the model with asymnet.brian.export "
                f"and edit that network in Brian2, or copy its variables into yours")
    names = {code.format(s="s"): name for name, code in RATE_CODE.items()}
    try:
        phi_visible = names[neurons.equations["rate_visible"].expr.code]
        phi = names[neurons.equations["rate_hidden"].expr.code]
        exponent = float(neurons.variables["noise_exponent"].get_value()[0])
        scaling = {value: key for key, value in NOISE_EXPONENT.items()}[exponent]
    except KeyError as missing:
        raise BrianExportError(f"not a group built by asymnet.brian.export: no rate or noise for {missing}") from None
    unit = np.asarray(neurons.unit[:])
    n = int(unit.max()) + 1
    per_chain = lambda values, name: _one_chain(np.asarray(values).reshape(-1, n), chain, name)  # noqa: E731
    W = _one_chain(_weights_of_blocks(synapses, n), chain, "weights")
    visible = per_chain(neurons.visible[:], "visible units")
    n_visible = int(visible.sum())
    if not np.array_equal(visible, np.arange(n) < n_visible):
        raise BrianExportError("the visible units must come first in every chain")
    temperature_input = bool(neurons.variables["temperature_input"].get_value()[0])
    learn_sigma = bool(neurons.variables["learn_sigma"].get_value()[0])
    network = RecurrentNetwork(n_visible, n - n_visible, phi=phi, phi_visible=phi_visible, learn_sigma=learn_sigma,
                               temperature_input=temperature_input, generator=torch.Generator()).double()
    sigma = per_chain(neurons.sigma[:], "noise levels sigma")
    with torch.no_grad():
        network.W.copy_(torch.from_numpy(W))
        network.b.copy_(torch.from_numpy(per_chain(neurons.b[:], "biases b")))
        w_T = per_chain(neurons.w_T[:], "temperature weights w_T")
        if temperature_input:
            network.w_T.copy_(torch.from_numpy(w_T))
        elif np.any(w_T != 0):
            raise BrianExportError("w_T is nonzero but temperature_input is False: set temperature_input to keep it")
        network.sigma_visible.copy_(torch.from_numpy(sigma[:n_visible]))
        network.sigma_hidden.copy_(torch.from_numpy(sigma[n_visible:]))
    alpha = float(neurons.variables["alpha"].get_value()[0])
    return network, GaussianOperator(alpha=alpha, noise_scaling=scaling)


@dataclass(frozen=True)
class ReplayedUpdate:
    """What :func:`local_rule_replay` leaves: the last minibatch's update and the network after every update.

    update_W (n, n), update_b (n,), update_w_T (n,): the rule's change for the last trajectory batch, batch
    mean, the negative of :func:`asymnet.plasticity.trajectory_update`'s gradients (update_w_T is applied
    only with a temperature input); network, operator: the Brian2 parameters read back after the last step.
    """

    update_W: torch.Tensor
    update_b: torch.Tensor
    update_w_T: torch.Tensor
    network: RecurrentNetwork
    operator: GaussianOperator


def local_rule_replay(
    network: RecurrentNetwork,
    operator: GaussianOperator,
    trajectories: Sequence[Sequence[torch.Tensor]],
    temperatures: Sequence[Sequence[float]],
    learning_rate: float = 0.0,
    target: str = "numpy",
    dt=1.0 * brian2.ms,
) -> ReplayedUpdate:
    """The local STDP / reverse-STDP rule as Brian2 synaptic code, replayed along recorded heating trajectories.

    trajectories[m] = [s_0, ..., s_K], each (batch, n_units) (e.g. :func:`asymnet.walkback.heating_trajectory`),
    temperatures[m] = [T_1, ..., T_K]. One chain of n_units neurons replays every (m, t, example) triple
    as one Brian2 step, s = s_t and s_earlier = s_{t-1} read from TimedArrays. At each step the
    summed variable gives F_i(s_t) = sum_j w_ij phi(s_t,j) + b_i + w_T,i log T_t, each neuron stores its
    postsynaptic factors, and every synapse adds presynaptic rate times postsynaptic change:

        dw_ij += phi(s_t,j) alpha / std_i^2 [(s_{t-1,i} - s_t,i) + alpha (s_t,i - F_i(s_t))]

    (the temporal, STDP term and the equal-time term of :mod:`asymnet.plasticity`); db_i and dw_T,i
    (times log T_t) likewise. After batch m's last example, w += learning_rate * dw / batch (plain SGD on
    the walkback loss, one update per trajectory batch, as W - lr * grad_W in torch), then dw = 0.
    The noise levels sigma are not learned here. Returns the last batch's update and the final network.
    """
    _check_exportable(network, operator)
    _check_dt(dt)
    if target == "cpp_standalone":
        raise BrianExportError("local_rule_replay runs on the runtime targets numpy and cython only")
    codeobj_class = _codeobj_class(target)
    if len(trajectories) == 0 or len(trajectories) != len(temperatures):
        raise ValueError(f"need one temperature list per trajectory; got {len(trajectories)} trajectories "
                         f"and {len(temperatures)} temperature lists")
    n = network.n_units
    K = len(temperatures[0])
    batch = trajectories[0][0].shape[0]
    for states, temps in zip(trajectories, temperatures):
        if len(states) != len(temps) + 1 or len(temps) != K:
            raise ValueError(f"every trajectory needs K + 1 = {K + 1} states for its K temperatures; "
                             f"got {len(states)} states and {len(temps)} temperatures")
        if any(tuple(s.shape) != (batch, n) for s in states):
            raise ValueError(f"every state must be (batch, n_units) = ({batch}, {n})")
    # replay step k = ((m K) + t - 1) batch + example: (M, K, batch, n) -> (M K batch, n)
    stacked = torch.stack([torch.stack(list(states)) for states in trajectories]).double().cpu().numpy()
    later = stacked[:, 1:].reshape(-1, n)
    earlier = stacked[:, :-1].reshape(-1, n)
    T_steps = np.repeat(np.asarray(temperatures, dtype=np.float64).ravel(), batch)
    batch_end = np.zeros(len(T_steps))
    batch_end[K * batch - 1::K * batch] = 1.0
    namespace = {
        "softplus": SOFTPLUS,
        "replay_later": brian2.TimedArray(later, dt=dt),
        "replay_earlier": brian2.TimedArray(earlier, dt=dt),
        "replay_T": brian2.TimedArray(T_steps, dt=dt),
        "batch_end": brian2.TimedArray(batch_end, dt=dt),
    }
    clock = brian2.Clock(dt=dt)
    equations = _neuron_equations(network, "s = replay_later(t, i) : 1") + "\n" + "\n".join([
        "s_earlier = replay_earlier(t, i) : 1",
        "T = replay_T(t) : 1",
        "drive = recurrent + b + w_T * log(T) : 1",
        "eta : 1",
        "change : 1",
        "mismatch : 1",
        "db : 1",
        "dw_T : 1",
        "update_b : 1",
        "update_w_T : 1",
        "learning_rate : 1 (shared, constant)",
        "batch_size : 1 (shared, constant)",
    ])
    neurons = brian2.NeuronGroup(n, equations, clock=clock, codeobj_class=codeobj_class, namespace=namespace)
    _set_parameters(neurons, network, operator, 1)
    neurons.learning_rate = float(learning_rate)
    neurons.batch_size = float(batch)
    # postsynaptic factors, stored before any parameter moves in this step
    neurons.run_regularly("""
        eta = alpha / std**2
        change = s_earlier - s
        mismatch = alpha * (s - drive)
        db += eta * (change + mismatch)
        dw_T += eta * (change + mismatch) * log(T)
        """, when="before_end", codeobj_class=codeobj_class)
    synapses = _block_diagonal_synapses(
        neurons, n, 1,
        "w : 1\ndw : 1\nupdate_w : 1\nrecurrent_post = w * rate_pre : 1 (summed)",
        codeobj_class, clock, network.W.detach().double().cpu().numpy())
    synapses.run_regularly("dw += rate_pre * eta_post * (change_post + mismatch_post)",
                           when="end", codeobj_class=codeobj_class)
    synapses.run_regularly("""
        update_w = update_w * (1 - batch_end(t)) + dw / batch_size * batch_end(t)
        w += learning_rate * dw / batch_size * batch_end(t)
        dw = dw * (1 - batch_end(t))
        """, when="after_end", codeobj_class=codeobj_class)
    neurons.run_regularly("""
        update_b = update_b * (1 - batch_end(t)) + db / batch_size * batch_end(t)
        update_w_T = update_w_T * (1 - batch_end(t)) + dw_T / batch_size * batch_end(t)
        b += learning_rate * db / batch_size * batch_end(t)
        w_T += learning_rate * dw_T / batch_size * batch_end(t) * int(temperature_input)
        db = db * (1 - batch_end(t))
        dw_T = dw_T * (1 - batch_end(t))
        """, when="after_end", codeobj_class=codeobj_class)
    brian2.Network(neurons, synapses).run(len(T_steps) * dt, namespace={})
    i, j = np.asarray(synapses.i[:]), np.asarray(synapses.j[:])
    update_W = np.empty((n, n))
    update_W[j, i] = np.asarray(synapses.update_w[:])
    trained, trained_operator = import_network(neurons, synapses)
    return ReplayedUpdate(torch.from_numpy(update_W), torch.from_numpy(np.asarray(neurons.update_b[:]).copy()),
                          torch.from_numpy(np.asarray(neurons.update_w_T[:]).copy()), trained, trained_operator)


def trajectory_entropy_production(
    network: RecurrentNetwork, operator: GaussianOperator, trajectory: torch.Tensor, n_batches: int = 20
) -> EntropyProductionEstimate:
    """EP and transition entropy of recorded T = 1 chains, as :func:`asymnet.metrics.balance.entropy_production`
    estimates them from chains it runs itself (same per-step terms, same batch-means standard errors).

    trajectory: (n_steps + 1, n_chains, n_units), e.g. ``BrianOperator.run(n_steps, record=True)`` after
    burn-in; step t contributes log p(s_{t+1}|s_t) - log p(s_t|s_{t+1}) and -log p(s_{t+1}|s_t), nats.
    """
    if trajectory.ndim != 3 or trajectory.shape[2] != network.n_units:
        raise ValueError(f"trajectory must be (n_steps + 1, n_chains, {network.n_units}); "
                         f"got {tuple(trajectory.shape)}")
    n_steps, n_chains = trajectory.shape[0] - 1, trajectory.shape[1]
    if n_batches < 1 or n_steps < n_batches or n_chains * n_batches < 2:
        raise ValueError(f"need n_steps >= n_batches >= 1 and n_chains * n_batches >= 2; got n_steps={n_steps}, "
                         f"n_chains={n_chains}, n_batches={n_batches}")
    with torch.no_grad():
        s = trajectory.to(network.W.dtype)
        drives = network(s.reshape(-1, s.shape[-1]), 1.0)  # every state's drive in one pass
        mu = drives.mu.reshape(s.shape)
        forward = operator.log_prob(s[1:], s[:-1], Drive(mu[:-1], drives.sigma), 1.0).double()  # (n_steps, n_chains)
        backward = operator.log_prob(s[:-1], s[1:], Drive(mu[1:], drives.sigma), 1.0).double()
    bounds = [k * n_steps // n_batches for k in range(n_batches + 1)]
    ep_means = torch.stack([(forward - backward)[a:z].mean(0) for a, z in zip(bounds[:-1], bounds[1:])], 1)
    h_means = torch.stack([-forward[a:z].mean(0) for a, z in zip(bounds[:-1], bounds[1:])], 1)
    count = n_chains * n_batches
    ep, h = (forward - backward).mean().item(), -forward.mean().item()
    ratio = ep / h if h > 0 else float("nan")
    ratio_stderr = ((ep_means - ratio * h_means).std() / (abs(h) * count**0.5)).item() if h > 0 else float("nan")
    return EntropyProductionEstimate(
        ep=ep, ep_stderr=(ep_means.std() / count**0.5).item(), conditional_entropy=h,
        conditional_entropy_stderr=(h_means.std() / count**0.5).item(), relative_irreversibility=ratio,
        relative_irreversibility_stderr=ratio_stderr, n_chains=n_chains, n_steps=n_steps, final_states=s[-1])
