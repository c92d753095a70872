"""A fused sampler for many chains of the recurrent network with the Gaussian operator.

One step of the chain, s' = (1 - alpha) s + alpha (W phi(s) + b + w_T log T) + std_T xi, is written as

    rates   <- phi(s)                                  (in place, a preallocated buffer)
    noise   <- xi ~ N(0, 1)                            (in place, a preallocated buffer)
    noise   <- c_T + std_T * noise + (1 - alpha) s     (two in-place passes; c_T = alpha (b + w_T log T))
    s       <- noise + rates (alpha W^T)               (one GEMM that adds into its output: addmm)

so a step allocates nothing, reads and writes each (chains, n) buffer a handful of times, and leaves
the GEMM as the only O(chains n^2) work. On a GPU a step is a handful of small kernels whose launches,
not their work, set the pace for small networks; ``run`` therefore captures GRAPH_STEPS steps at a time in
a CUDA graph and replays it (one launch for GRAPH_STEPS steps, the same kernels and random numbers).
alpha W^T is formed once per sampler (the weights are a snapshot: build a new sampler after the network
learns). The chain is the one
:func:`asymnet.walkback.run_chain` and :func:`asymnet.walkback.generate` run with the operator's own
``sample``: from the same generator state both draw the same normals in the same order, and tests check
that the trajectories agree to float64 round-off. ``benchmarks/sampling.py`` measures it against the
bare GEMM and against Brian2.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as nnf

from asymnet.networks.recurrent import RecurrentNetwork
from asymnet.operators import GaussianOperator

GRAPH_STEPS = 32  # steps per CUDA-graph replay in ChainSampler.run (runs of fewer than 2x this stay eager)


class ChainSampler:
    """Chains s (n_chains, n_units) of ``network`` under ``operator``, stepped in place.

    ``state`` is copied into the sampler's own buffer (read it back with :attr:`state`). ``known``
    (n_units,) bool and ``values`` (n_chains, n_units) clamp units at every step (inpainting), as
    :func:`asymnet.walkback.generate` does. No gradient is tracked.
    """

    def __init__(self, network: RecurrentNetwork, operator: GaussianOperator, state: torch.Tensor,
                 generator: torch.Generator | None = None, known: torch.Tensor | None = None,
                 values: torch.Tensor | None = None):
        if not self.supports(network, operator):
            raise TypeError(f"ChainSampler runs a RecurrentNetwork with a GaussianOperator, got "
                            f"{type(network).__name__} with {type(operator).__name__}; use walkback.run_chain")
        m = network.n_units
        if state.dim() != 2 or state.shape[1] != m:
            raise ValueError(f"state must be (n_chains, {m}), got {tuple(state.shape)}")
        self.network, self.operator, self.generator = network, operator, generator
        with torch.no_grad():
            self._weights = (operator.alpha * network.W[:m].t()).contiguous()  # (n_neurons, n_units)
            self._bias = operator.alpha * network.b[:m].detach()
            self._w_T = None if network.w_T is None else operator.alpha * network.w_T[:m].detach()
            self._unit_std = nnf.softplus(network.sigma.detach())
        self._state = state.detach().clone().contiguous()
        self._noise = torch.empty_like(self._state)
        self._rates = None if network.hidden_units == "fast" else self._state.new_empty(state.shape[0], network.n_neurons)
        if known is None:
            self._clamp = None
        else:
            columns = known.to(state.device).nonzero().squeeze(1)
            self._clamp = (columns, values.to(state)[:, columns].contiguous())
        self._apply_clamp()
        self._graphs: dict[float, torch.cuda.CUDAGraph] | None = {} if self._state.is_cuda else None

    @staticmethod
    def supports(network, operator) -> bool:
        """Whether this sampler runs (network, operator): a recurrent network (without replicas or a
        convolutional pathway) with the Gaussian operator, its drive not leaking by temperature (network.posterior_leak)."""
        return (isinstance(network, RecurrentNetwork) and network.replicas is None and network.pathway is None
                and network.posterior_leak is None and isinstance(operator, GaussianOperator))

    @property
    def state(self) -> torch.Tensor:
        """The chains' current states (n_chains, n_units), the sampler's own buffer."""
        return self._state

    @torch.no_grad()
    def step(self, T: float = 1.0) -> torch.Tensor:
        """One step s <- s' ~ p_T(. | s) of every chain, in place; returns the state buffer."""
        s, noise, alpha = self._state, self._noise, self.operator.alpha
        offset = self._bias if self._w_T is None or T == 1.0 else self._bias + self._w_T * math.log(T)
        rates = self._rates_of(s, T)
        noise.normal_(generator=self.generator)
        torch.addcmul(offset, noise, self.operator.temperature_factor(T) * self._unit_std, out=noise)
        noise.add_(s, alpha=1.0 - alpha)
        torch.addmm(noise, rates, self._weights, out=s)
        self._apply_clamp()
        return s

    def run(self, n_steps: int, T: float = 1.0) -> torch.Tensor:
        """``n_steps`` steps at temperature T; returns the state buffer. On a GPU, whole blocks of
        GRAPH_STEPS steps replay a captured CUDA graph of them, the rest run one by one."""
        graph = None
        if n_steps >= 2 * GRAPH_STEPS and self._graphs is not None:
            graph, warm_up_steps = self._graph(T)
            n_steps -= warm_up_steps
        if graph is not None:
            for _ in range(n_steps // GRAPH_STEPS):
                graph.replay()
            n_steps %= GRAPH_STEPS
        for _ in range(n_steps):
            self.step(T)
        return self._state

    def _graph(self, T: float) -> "tuple[torch.cuda.CUDAGraph | None, int]":
        """The CUDA graph of GRAPH_STEPS steps at T, and how many steps of the chain its capture took
        (2 warm-up steps on first use, else 0); None where capture fails, after one warning: the steps
        then run eagerly."""
        warm_up_steps = 0
        if T not in self._graphs:
            side = torch.cuda.Stream(self._state.device)
            side.wait_stream(torch.cuda.current_stream(self._state.device))
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.stream(side):
                    for _ in range(2):  # warm-up steps (they count: the chain moves) initialise cuBLAS
                        self.step(T)
                        warm_up_steps += 1
                torch.cuda.current_stream(self._state.device).wait_stream(side)
                if self.generator is not None:
                    graph.register_generator_state(self.generator)
                with torch.cuda.graph(graph):
                    for _ in range(GRAPH_STEPS):
                        self.step(T)
            except RuntimeError as error:  # a capture that this torch or driver refuses: run eagerly
                warnings.warn(f"CUDA graph capture of the chain failed ({error}); stepping without graphs")
                self._graphs = None
                return None, warm_up_steps
            self._graphs[T] = graph
        return self._graphs[T], warm_up_steps

    def cool(self, temperatures: list[float]) -> torch.Tensor:
        """The cooling chain of generation, s_{t-1} ~ p_{T_t}(. | s_t) for t = K..1 over [T_1, ..., T_K]."""
        for T in reversed(temperatures):
            self.step(T)
        return self._state

    def _rates_of(self, s: torch.Tensor, T: float) -> torch.Tensor:
        if self._rates is None:  # fast hidden units: their rates are a function of the visible state and T
            return self.network.rates(s, T)
        return self.network.phi(s, out=self._rates)

    def _apply_clamp(self) -> None:
        if self._clamp is not None:
            columns, values = self._clamp
            self._state[:, columns] = values
