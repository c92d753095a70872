"""Running least squares for the readout of the recurrent network (``training.optimizer: least_squares``).

For F(s, T) = W phi(s) + b + w_T log T and the Gaussian operator, each walk-back term is quadratic in the
readout. Write theta_i = (W_i, b_i, w_T,i) for postsynaptic unit i, f = (rates(s_t, T_t), 1, log T_t)
for the presynaptic features at the later heating step, and y = (s_{t-1} - (1 - alpha) s_t) / alpha. Then

    -log p_{T_t}(s_{t-1} | s_t) = sum_i alpha^2 / (2 g(T_t)^2 sigma_i^2) (y_i - f . theta_i)^2 + const,

so the walk back's loss (and the score anchor's, a one-step trajectory at T = 1) is a weighted least-squares
problem per unit. Its Gram matrix A = sum_t w_t E[f f^T] and cross-moment C = sum_t w_t E[f y^T], with
w_t = T_t^p / g(T_t)^2 (p: ``walkback.step_weight_power``) and the anchor's weight, are shared by all units:
sigma_i^2 scales unit i's whole loss and drops out of its minimiser. The gradient the local rule computes
is (alpha^2 / sigma_i^2) (A theta_i - C_i) (tests/test_readout.py proves it equal to the rule).

The optimiser keeps exponential moving averages of A and C over the minibatches (``ls_memory``, bias
corrected as in Adam; the learning-rate schedule does not change it). It solves the damped problem
(A + lambda I) theta* = C with lambda = ``ls_damping`` times A's mean diagonal (Levenberg-Marquardt), and
moves the readout a fraction ``ls_step`` of the way to theta* (scaled by the learning-rate schedule). This is recursive least squares with forgetting, the rule of FORCE
learning (Sussillo and Abbott 2009): each synapse's change needs the shared matrix (A + lambda I)^-1 besides
its two ends, so it is less local than the STDP rule, whose gradient it whitens. Why it is here: the
per-weight scaling of Adam crawls along readout directions that the data barely excite, and on the
mixture those directions hold the barriers between modes (studies/prop1/anchor_regression.py,
studies/prop1/expansion_reference.py). Past minibatches stay in A and C as the quadratic losses they were,
re-evaluated at the current readout, which keeps a direction that one minibatch alone excites from being
overshot (averaging gradients, by contrast, would scale that direction's step by 1 / (1 - memory)).

Why ``ls_step`` below 1: the walk back's targets come from the operator being trained. In one dimension,
with data variance V and noise variance s^2, the T = 1 term's exact least-squares map sends the slope c of
the operator's mean to c V / (c^2 V + s^2) (the regression of s_0 on s_1 = c s_0 + noise), whose slope at its
fixed point is 2 s^2 / V - 1, near -1 for a small noise: full steps oscillate, and a step of
1 / (2 - 2 s^2 / V), about 1/2, contracts fastest.

The other parameters (the visible noise levels) keep Adam with ``training.learning_rate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.linalg import blas
from torch.nn import functional as nnf

from asymnet.distributed import Shard
from asymnet.errors import AsymnetError, TrainingDiverged
from asymnet.networks.recurrent import RecurrentNetwork
from asymnet.operators import GaussianOperator, Operator


class LeastSquaresError(AsymnetError):
    """The least-squares readout was asked for a network or operator it is not derived for."""


def readout_parameters(network: RecurrentNetwork) -> list[torch.nn.Parameter]:
    """W, b and w_T (when there is a temperature input): the parameters the least-squares step sets."""
    return [p for p in (network.W, network.b, network.w_T) if p is not None]


def readout_matrix(network: RecurrentNetwork) -> torch.Tensor:
    """theta (p, m): the learning rows of the readout as columns, one per postsynaptic unit of the state;
    its rows are W[:m]^T (n_neurons), b[:m] and w_T[:m] (with a temperature input). A copy."""
    m = network.n_units
    rows = [network.W[:m].t(), network.b[:m, None].t()]
    if network.w_T is not None:
        rows.append(network.w_T[:m, None].t())
    return torch.cat(rows).detach().clone()


def set_readout(network: RecurrentNetwork, theta: torch.Tensor) -> None:
    """Write theta (p, m), laid out as :func:`readout_matrix`'s, into W[:m], b[:m] and w_T[:m], in place."""
    m, n = network.n_units, network.n_neurons
    theta = theta.to(network.W.dtype)
    with torch.no_grad():
        network.W[:m] = theta[:n].t()
        network.b[:m] = theta[n]
        if network.w_T is not None:
            network.w_T[:m] = theta[n + 1]


def check_supported(network, operator: Operator) -> None:
    if not isinstance(network, RecurrentNetwork):
        raise LeastSquaresError(f"training.optimizer: least_squares needs the recurrent network (its loss is "
                                f"quadratic in the readout W, b, w_T), got {type(network).__name__}")
    if not isinstance(operator, GaussianOperator):
        raise LeastSquaresError(f"training.optimizer: least_squares needs the Gaussian operator (its loss is "
                                f"quadratic in the readout), got {type(operator).__name__}")


def regression(network: RecurrentNetwork, operator: Operator, states: Sequence[torch.Tensor],
               temperatures: Sequence[float], weight_power: float = 0.0, weight: float = 1.0,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The walk back over [s_0, ..., s_K] (each (batch, n_units)) as weighted least squares in the readout:
    features f (K, batch, p), targets y (K, batch, n_units) and weights w (K,) = weight T_t^p / g(T_t)^2, so
    that the summed batch-mean loss is sum_t w_t mean_b alpha^2 |y - f theta|^2_{sigma^-2} / 2 + const.
    No gradient."""
    check_supported(network, operator)
    with torch.no_grad():
        later, earlier = torch.stack(list(states[1:])), torch.stack(list(states[:-1]))
        T = torch.tensor(list(temperatures), dtype=later.dtype, device=later.device)
        K, batch = later.shape[:2]
        parts = [network.rates(later, T.view(-1, 1, 1)), later.new_ones(K, batch, 1)]
        if network.w_T is not None:
            parts.append(T.log().view(-1, 1, 1).expand(K, batch, 1))
        alpha = operator.alpha
        targets = (earlier - (1.0 - alpha) * later) / alpha
        weights = weight * T.pow(weight_power) / torch.as_tensor(operator.temperature_factor(T)).pow(2)
        return torch.cat(parts, dim=-1), targets, weights


def weighted_gram(rows: torch.Tensor, row_weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum_r w_r f_r f_r^T (p, p) in float64 for rows f (n, p) and weights w (n,) >= 0 (None: all 1). On the
    CPU this is BLAS's symmetric rank-k update (scipy's dsyrk) of the rows scaled by sqrt(w), which computes
    one triangle: half the flops of the general product, 1.5x faster on one thread (benchmarks/ls_gram.py),
    and symmetric exactly. Elsewhere (a GPU), or with a negative weight, the general product, symmetrised."""
    rows = rows.double()
    row_weights = None if row_weights is None else row_weights.double()
    if rows.device.type != "cpu" or (row_weights is not None and bool((row_weights < 0).any())):
        A = (rows if row_weights is None else rows * row_weights[:, None]).t() @ rows
        return 0.5 * (A + A.t())
    scaled = (rows if row_weights is None else rows * row_weights.sqrt()[:, None]).contiguous().numpy()
    p = scaled.shape[1]
    # scaled^T scaled into the upper triangle of a zeroed matrix (scaled.T is Fortran-ordered: no copy)
    upper = blas.dsyrk(1.0, scaled.T, c=np.zeros((p, p), order="F"), trans=0, overwrite_c=True)
    return torch.from_numpy(upper + np.tril(upper.T, -1))


def moments(features: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A = sum_t w_t mean_b f f^T (p, p) and C = sum_t w_t mean_b f y^T (p, m) of one :func:`regression`, in
    float64: the directions that the data barely excite are the ones this optimiser is for, and float32
    rounding of A leaves negative eigenvalues of order 1e-7 times its diagonal among them."""
    batch = features.shape[1]
    flat = features.reshape(-1, features.shape[-1]).double()
    row_weights = (weights.double() / batch).repeat_interleave(batch)
    C = (flat * row_weights[:, None]).t() @ targets.reshape(-1, targets.shape[-1]).double()
    return weighted_gram(flat, row_weights), C


class LeastSquaresReadout:
    """The optimiser of ``training.optimizer: least_squares`` (see the module's text). Its interface is the
    part of torch.optim.Optimizer that training uses: ``param_groups`` (whose ``lr`` the schedule sets; the
    readout's step is ``step_fraction * lr / learning_rate``), ``zero_grad``, ``step``, ``state_dict`` and
    ``load_state_dict``; :meth:`accumulate` takes each minibatch's regressions before :meth:`step`."""

    def __init__(self, network: RecurrentNetwork, operator: Operator, learning_rate: float,
                 step_fraction: float = 0.5, memory: float = 0.99, damping: float = 1e-6):
        check_supported(network, operator)
        if not 0.0 < step_fraction <= 1.0 or not 0.0 <= memory < 1.0 or damping < 0.0:
            raise ValueError(f"need 0 < step_fraction <= 1, 0 <= memory < 1 and damping >= 0, got "
                             f"{step_fraction}, {memory}, {damping}")
        self.network, self.base_lr = network, learning_rate
        self.step_fraction, self.memory, self.damping = step_fraction, memory, damping
        readout = {id(p) for p in readout_parameters(network)}
        others = [p for p in network.parameters() if id(p) not in readout and p.requires_grad]
        self.adam = torch.optim.Adam(others, lr=learning_rate) if others else None
        self.readout_group = {"params": readout_parameters(network), "lr": learning_rate}
        self.param_groups = (self.adam.param_groups if self.adam else []) + [self.readout_group]
        p = readout_matrix(network).shape[0]
        device = network.W.device
        self.A = torch.zeros(p, p, dtype=torch.float64, device=device)
        self.C = torch.zeros(p, network.n_units, dtype=torch.float64, device=device)
        self.total, self.updates = 0.0, 0  # the sum of the minibatches' weights, and their number

    def accumulate(self, regressions: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                   shard: Shard = Shard()) -> None:
        """Fold one minibatch (the sum of its :func:`regression` terms; with a ``shard``, averaged over the
        processes) into the weighted sums, in which each earlier minibatch's weight is multiplied by ``memory``."""
        A, C = torch.zeros_like(self.A), torch.zeros_like(self.C)
        for features, targets, weights in regressions:
            a, c = moments(features, targets, weights)
            A += a
            C += c
        shard.average_([A, C])
        self.A.mul_(self.memory).add_(A)
        self.C.mul_(self.memory).add_(C)
        self.total = self.memory * self.total + 1.0
        self.updates += 1

    def target(self) -> torch.Tensor:
        """theta* (p, m) solving (A + lambda I) theta* = C on the weighted means; float64."""
        if not self.updates:
            raise RuntimeError("LeastSquaresReadout.step before any accumulate: no minibatch to fit")
        A, C = self.A / self.total, self.C / self.total
        lam = self.damping * A.diagonal().mean()
        factor, info = torch.linalg.cholesky_ex(A + lam * torch.eye(len(A), dtype=A.dtype, device=A.device))
        if info:
            raise TrainingDiverged(f"the readout's Gram matrix is not positive definite (leading minor "
                                   f"{int(info)}); raise training.ls_damping above {self.damping:g}")
        return torch.cholesky_solve(C, factor)

    def zero_grad(self, set_to_none: bool = False) -> None:
        for p in self.network.parameters():
            if p.grad is not None:
                p.grad = None if set_to_none else p.grad.zero_()

    def step(self) -> None:
        fraction = self.step_fraction * self.readout_group["lr"] / self.base_lr
        theta = readout_matrix(self.network).double()
        set_readout(self.network, theta + fraction * (self.target() - theta))
        if self.adam:
            self.adam.step()

    def state_dict(self) -> dict:
        return {"A": self.A.clone(), "C": self.C.clone(), "total": self.total, "updates": self.updates,
                "readout_lr": self.readout_group["lr"], "adam": self.adam.state_dict() if self.adam else None}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"A", "C", "total", "updates", "readout_lr", "adam"}:
            raise ValueError(f"not a LeastSquaresReadout state (keys {sorted(state)}): the checkpoint was written "
                             "by another training.optimizer")
        self.A.copy_(state["A"])
        self.C.copy_(state["C"])
        self.total, self.updates = float(state["total"]), int(state["updates"])
        self.readout_group["lr"] = state["readout_lr"]
        if self.adam:
            self.adam.load_state_dict(state["adam"])


def unit_weights(network: RecurrentNetwork, operator: GaussianOperator) -> torch.Tensor:
    """alpha^2 / softplus(sigma_i)^2 per postsynaptic unit (m,): the factor between A theta_i - C_i and the
    gradient of the loss in theta_i."""
    return operator.alpha**2 / nnf.softplus(network.sigma.detach()).pow(2)
