"""The Variational Walkback update of a recurrent network as a local STDP / reverse-STDP rule.

For F(s) = W phi(s) + b and the Gaussian operator, step t of a heating trajectory contributes
(docs/design.md, "The local rule"; the gradient of log p_T(s_{t-1} | s_t)):

    dW_ij = alpha (s_{t-1,i} - mu_i(s_t)) phi(s_{t,j}) / std_i^2,     db_i = alpha (s_{t-1,i} - mu_i(s_t)) / std_i^2

with mu(s_t) = (1 - alpha) s_t + alpha F(s_t) and std_i = g(T_t) softplus(sigma_i). The factor
phi(s_{t,j}) is presynaptic (unit j's rate at the later heating step), the factor
(s_{t-1,i} - mu_i(s_t)) / std_i^2 postsynaptic (unit i's error), so every synapse needs only what
its two ends hold. Since s_{t-1} - mu(s_t) = (s_{t-1} - s_t) + alpha (s_t - F(s_t)), the update splits into

- a temporal term  phi(s_{t,j}) (s_{t-1,i} - s_{t,i}): presynaptic rate times the postsynaptic change
  from step t to step t-1, i.e. forward in cooling (generative) time. Pre before a rising post
  potentiates: STDP (Bengio et al. 2015). Read in the heating (destructive) order, in which the
  trajectory was sampled, the same pair is post change *before* pre, the sign of d post/dt flips:
  reverse STDP;
- an equal-time term  alpha phi(s_{t,j}) (s_{t,i} - F_i(s_t)), both factors at one time.

For the Bernoulli operator the postsynaptic factor is (s_{t-1,i} - rho_i(s_t)) / T_t instead.
With fast hidden units (``RecurrentNetwork(hidden_units="fast")``) the postsynaptic units are the visible
ones and the presynaptic rates include the hidden units' instantaneous rates h = phi(a_h),
a_h = W_hv phi_v(v) + b_h + w_T,h log T. A fixed expansion (``hidden_learning="fixed"``) gets no update
of its hidden rows. Learned fast hidden units (``hidden_learning="learned"``) get the visible units'
postsynaptic factor e_v = alpha (v_{t-1} - mu_v(s_t)) / std^2 (times T_t^p with ``weight_power``) through
feedback synapses B (n_hidden, n_visible):

    delta_h = (B e_v) * phi'(a_h),   dW_hv = delta_h phi_v(v_t)^T,   db_h = delta_h,   dw_T,h = delta_h log T_t

a three-factor rule: presynaptic phi_v(v_{t,j}), postsynaptic phi'(a_h,i) (read from the unit's own rate,
e.g. 1 - h_i^2 for tanh), and the third factor (B e_v)_i that arrives at hidden unit i. With
B = W_vh^T (``feedback="transpose"``) it is the exact gradient (tests prove it in float64); with a fixed
random B (``"random"``) it is feedback alignment (Lillicrap et al. 2016); with ``"kolen_pollack"`` B
follows the mirror of W_vh's update and both decay (:func:`kolen_pollack_step`; Akrout et al. 2019), so
B - W_vh^T shrinks geometrically. All of it is computed here without autograd; tests prove the exact
parts equal autograd's gradient in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from asymnet.errors import AsymnetError
from asymnet.networks.recurrent import RecurrentNetwork
from asymnet.operators import LOG_2PI, BernoulliOperator, Drive, GaussianOperator, Operator
from asymnet.walkback import ReplicaSchedule, Targets, drift_gain, walkback_losses


class PlasticityError(AsymnetError):
    """The local rule was asked for a network or operator it is not derived for."""


@dataclass(frozen=True)
class LocalUpdate:
    """Gradients of the summed walkback loss (so the update is their negative), and its terms.

    grad_W (n, n), grad_b (n,), grad_sigma_visible (n_visible,) or None when sigma is fixed,
    grad_w_T (n,) or None without a temperature input (its presynaptic rate is log T); the hidden rows of
    grad_W, grad_b, grad_w_T are the feedback rule's for learned fast hidden units, else 0;
    loss: sum over steps of the batch-mean -log p_{T_t}(s_{t-1} | s_t), nats;
    grad_pathway: the convolutional pathway's gradients by parameter name (networks.pathway), None without one;
    temporal_norm / equal_time_norm: Frobenius norms of the temporal (STDP) and equal-time parts
    of dW, batch-mean, summed over steps. With replicas every field has a leading replica axis:
    grad_W (R, n, n), ..., loss (R,), and the norms are (R,) tensors.
    """

    grad_W: torch.Tensor
    grad_b: torch.Tensor
    grad_sigma_visible: torch.Tensor | None
    grad_w_T: torch.Tensor | None
    loss: torch.Tensor
    temporal_norm: float | torch.Tensor
    equal_time_norm: float | torch.Tensor
    grad_pathway: dict[str, torch.Tensor] | None = None


def trajectory_update(
    network: RecurrentNetwork,
    operator: Operator,
    states: list[torch.Tensor],
    temperatures: list[float] | ReplicaSchedule,
    drives: list[Drive] | None = None,
    with_terms: bool = True,
    weight_power: float = 0.0,
    targets: Targets | None = None,
    continuous_q: float = 0.0,
) -> LocalUpdate:
    """The local rule summed over a heating trajectory [s_0, ..., s_K] (each (batch, n)). ``temperatures``
    [T_1, ..., T_K], or a (K, batch, 1) tensor of each row's own (walkback.sample_steps).

    ``targets`` (walkback.posterior_targets, Gaussian operator): the postsynaptic error is m_{t-1} - mu(s_t),
    the mean of s_{t-1} given s_t and s_0, in place of s_{t-1} - mu(s_t) (a target the postsynaptic unit
    holds as it would hold its own earlier value), and the loss and the noise levels' update add the
    target's variance, as autograd of walkback.walkback_losses with the same targets.

    ``weight_power`` (``walkback.step_weight_power``): step t's postsynaptic factor of W, b and w_T is
    multiplied by T_t ** weight_power, a plasticity gain set by the temperature broadcast; the noise
    levels' update and the loss are those of the plain rule (autograd of walkback.walkback_losses with the
    same ``weight_power``). ``continuous_q`` (``walkback.step_weighting: continuous``): the gain is also times
    1 - T_t^-q (walkback.drift_gain), as autograd of walkback.walkback_losses with the same ``continuous_q``.

    ``drives``, if given, are F(s_t) for t = 0..K-1 as the heating computed them; the rule reuses
    those at s_1..s_{K-1} and computes only F(s_K). ``with_terms=False`` skips the norms of the
    temporal and equal-time terms (one more GEMM; they are then NaN).

    Replicas (a network with ``replicas=R``): states (R, batch, n), ``temperatures`` a
    walkback.ReplicaSchedule (a list [T_1, ..., T_K] serves every replica alike); each replica's rule runs
    over its real steps only (the padded ones are masked out of the error, the loss and the noise level's
    count), one batched GEMM for all.

    Learned fast hidden units (``network.hidden_learning == "learned"``) get the three-factor update of the
    module docstring through ``network.feedback_matrix``; their rows of the gradients hold it.
    """
    if not isinstance(network, RecurrentNetwork):
        raise PlasticityError(f"the local rule needs a RecurrentNetwork, got {type(network).__name__}")
    with torch.no_grad():
        later = torch.stack(states[1:])  # s_t, t = 1..K: (K, batch, n), or (K, R, batch, n)
        earlier = torch.stack(states[:-1] if targets is None else targets.means)  # s_{t-1}, or its mean
        padded = None  # one network: every step is real
        if network.replicas is not None:
            padded = temperatures if isinstance(temperatures, ReplicaSchedule) else \
                ReplicaSchedule.pad([list(temperatures)] * network.replicas, later.dtype, later.device)
            T, steps = padded.T, padded.steps
        elif torch.is_tensor(temperatures):  # (K, batch, 1): each row's own steps (walkback.sample_steps)
            T, steps = temperatures.to(later.dtype), len(temperatures)
        else:
            T = torch.tensor(temperatures, dtype=later.dtype, device=later.device).view(-1, 1, 1)
            steps = len(temperatures)
        m = network.n_units  # postsynaptic units: those of the state (all, or the visible ones with fast hidden units)
        units = slice(None, m)
        pre = network.rates(later, T)  # (K, [R,] batch, n_neurons)
        leaking = network.posterior_leak is not None
        pathway = network.pathway
        if drives is not None and not leaking and pathway is None and (network.hidden_units == "slow" or not network.temperature_conditioned):
            # heating drove s_t at T_{t+1}; the walk back needs F(s_t, T_t), which differs only by the log T
            # neuron's input, w_T (log T_t - log T_{t+1}): one GEMM per step instead of two
            last_T = temperatures[-1] if padded is None else T[-1]
            F = torch.stack([d.mu for d in drives[1:]] + [network(states[-1], last_T).mu])
            if network.w_T is not None and padded is not None:
                F += padded.log_ratio * network.for_states(network.w_T, units)
            elif network.w_T is not None and len(temperatures) > 1:
                shift = torch.tensor([math.log(a / b) for a, b in zip(temperatures[:-1], temperatures[1:])] + [0.0],
                                     dtype=F.dtype, device=F.device)
                F += shift.view(-1, 1, 1) * network.w_T[:m]
        else:
            F = torch.matmul(pre, network.W[..., :m, :].mT) + network.for_states(network.b, units)
            if network.w_T is not None:
                F = F + network.for_states(network.w_T, units) * T.log()
            if pathway is not None:  # its layers' rates at s_t, kept for its rule below
                cache = pathway.rates(pre[..., :m], T)
                F = F + pathway.drive(cache, pre.shape[:-1])
        keep = network.leak(T) if leaking else None  # c(T_t): mu = c s_t + (1 - c) F (network.posterior_leak)
        if leaking:
            F = F.mul_(1.0 - keep).add_(keep * later[..., :m])
        alpha = operator.alpha
        batch = later.shape[-2]
        if isinstance(operator, GaussianOperator):
            std = operator.temperature_factor(T) * nnf.softplus(network.sigma)  # (K, [R,] 1, m)
            precision = std.pow(-2)
            # error = s_{t-1} - mu(s_t), built in place in F's buffer (the largest tensors here: (K, batch, n))
            error = F.mul_(-alpha).add_(later, alpha=alpha - 1).add_(earlier)
            if padded is not None:
                error.mul_(padded.mask)
            post = error * (alpha * precision)
            rows = std.shape[-2]  # 1, or batch when each row has its own temperatures (a batch mean then)
            if padded is None:  # sum of z^2 = sum of error * post / alpha, as one dot product without a temporary
                z2_sum = torch.dot(error.reshape(-1), post.reshape(-1)) / alpha
                log_std = std.log().sum() / rows
            else:
                z2_sum = (error * post).sum((0, 2, 3)) / alpha  # (R,)
                log_std = (std.log() * padded.mask).sum((0, 2, 3))
            loss = 0.5 * z2_sum / batch + log_std + 0.5 * (steps if padded is None else steps[:, 0]) * m * LOG_2PI
            spread = None  # the targets' variance over std^2, per step and unit: (K, [R,] 1, m)
            if targets is not None:
                spread = targets.variances * precision / rows
                loss = loss + 0.5 * (spread.sum() if padded is None else spread.sum((0, 2, 3)))
            grad_sigma = None
            if network.sigma_visible.requires_grad:
                v = network.n_visible
                z2_visible = (error[..., :v] * post[..., :v]).sum((0, -2)) / (alpha * batch)  # ([R,] v), batch mean
                if spread is not None:
                    z2_visible = z2_visible + spread[..., :v].sum((0, -2))
                slope = torch.sigmoid(network.sigma_visible) / nnf.softplus(network.sigma_visible)
                grad_sigma = -(z2_visible - steps) * slope
            temporal_scale = alpha * precision
        elif isinstance(operator, BernoulliOperator):
            logits = ((1 - alpha) * later + alpha * F) / T
            post = alpha * (earlier - torch.sigmoid(logits)) / T
            nll = nnf.binary_cross_entropy_with_logits(logits, earlier, reduction="none")
            if padded is not None:
                post, nll = post * padded.mask, nll * padded.mask
            loss = nll.sum((0, -1)).mean(-1)
            grad_sigma = None
            temporal_scale = alpha / T
        else:
            raise PlasticityError(f"no local rule for operator {type(operator).__name__}")
        if weight_power or continuous_q:
            gain = drift_gain(T, weight_power, continuous_q)
            post, temporal_scale = post * gain, temporal_scale * gain
        if leaking:  # each synapse moves (1 - c) of mu
            post, temporal_scale = post * (1.0 - keep), temporal_scale * (1.0 - keep)
        flat_post, flat_pre = _rows(post), _rows(pre)  # ([R,] K batch, units)
        grad_W = torch.zeros_like(network.W)
        grad_W[..., :m, :] = (flat_pre.mT @ flat_post).mT.div_(-batch)  # this operand order runs 20 % faster in MKL
        grad_b = torch.zeros_like(network.b)
        grad_b[..., :m] = -post.sum((0, -2)) / batch
        grad_w_T = None
        if network.w_T is not None:
            grad_w_T = torch.zeros_like(network.w_T)
            grad_w_T[..., :m] = -(post * T.log()).sum((0, -2)) / batch
        if network.hidden_learning == "learned":
            _hidden_update(network, post, pre, T, grad_W, grad_b, grad_w_T)
        grad_pathway = None if pathway is None else pathway.local_gradients(cache, post, batch)
        temporal_norm = equal_time_norm = float("nan") if padded is None else torch.full_like(loss, float("nan"))
        if with_terms:
            # padded steps hold the state, so s_{t-1} - s_t is 0 there already
            temporal = _rows((earlier - later) * temporal_scale).mT @ flat_pre / batch
            equal_time = -grad_W[..., :m, :] - temporal  # the two terms sum to dW = -grad_W
            if padded is None:
                temporal_norm, equal_time_norm = temporal.norm().item(), equal_time.norm().item()
            else:
                temporal_norm, equal_time_norm = temporal.flatten(1).norm(dim=1), equal_time.flatten(1).norm(dim=1)
    return LocalUpdate(grad_W, grad_b, grad_sigma, grad_w_T, loss, temporal_norm, equal_time_norm, grad_pathway)


def _hidden_update(network: RecurrentNetwork, post: torch.Tensor, pre: torch.Tensor, T: torch.Tensor,
                   grad_W: torch.Tensor, grad_b: torch.Tensor, grad_w_T: torch.Tensor | None) -> None:
    """Write the feedback rule of learned fast hidden units into the hidden rows of the gradients (in place).

    post: e_v, the visible units' postsynaptic factor (K, [R,] batch, n_visible); pre: the rates
    (phi_v(v_t), h_t) (K, [R,] batch, n_neurons); T (K, [R,] 1, 1). Third factor B e_v, postsynaptic
    phi'(a_h), presynaptic phi_v(v_t) (1 for b_h, log T_t for w_T,h):
    delta_h = (B e_v) * phi'(a_h); -grad W_hv = sum_t mean_batch delta_h phi_v(v_t)^T."""
    v, batch = network.n_visible, post.shape[-2]
    delta = torch.matmul(post, network.feedback_matrix.mT) * network.hidden_slope(pre[..., v:])  # (K, [R,] batch, h)
    flat_delta, flat_visible = _rows(delta), _rows(pre[..., :v])
    grad_W[..., v:, :v] = (flat_delta.mT @ flat_visible).div_(-batch)
    grad_b[..., v:] = -delta.sum((0, -2)) / batch
    if grad_w_T is not None:
        grad_w_T[..., v:] = -(delta * T.log()).sum((0, -2)) / batch


def matrix_cosine(a: torch.Tensor, b: torch.Tensor) -> float | torch.Tensor:
    """<a, b>_F / (||a||_F ||b||_F) of two matrices (rows, columns); with a leading replica axis (R, rows,
    columns) one cosine per replica, an (R,) tensor. NaN where a matrix is 0. Computed in float64: in float32
    the rounding of three sums over ~10^5 products puts the cosine of equal matrices a few 1e-4 above 1."""
    a, b = a.double(), b.double()
    products = (a * b).sum((-2, -1)) / (a.norm(dim=(-2, -1)) * b.norm(dim=(-2, -1)))
    return products.item() if products.dim() == 0 else products


def feedback_alignment(network: RecurrentNetwork) -> float | torch.Tensor:
    """cos(B, W_vh^T): how well the feedback synapses B (n_hidden, n_visible) mirror the forward synapses
    W_vh from the hidden to the visible units (1 for ``feedback="transpose"``, about 0 for a random B
    against an unrelated W_vh; NaN while W_vh = 0). With replicas an (R,) tensor."""
    v = network.n_visible
    with torch.no_grad():
        return matrix_cosine(network.feedback_matrix, network.W[..., :v, v:].mT)


def rule_gradient_cosines(network: RecurrentNetwork, operator: Operator, states: list[torch.Tensor],
                          temperatures: list[float] | ReplicaSchedule, update: LocalUpdate,
                          weight_power: float = 0.0, targets: Targets | None = None,
                          continuous_q: float = 0.0) -> dict[str, float | torch.Tensor]:
    """How far the local update is from the exact gradient of the same walkback loss on one trajectory
    (walkback.walkback_losses with ``weight_power``), 1 for transpose feedback to round-off:
    ``rule_gradient_cosine``, cos(rule's grad W_hv, autograd's) of learned fast hidden units (with replicas an
    (R,) tensor), and ``pathway_gradient_cosine``, the same over all of a convolutional pathway's parameters."""
    v = network.n_visible
    learned = network.hidden_learning == "learned"
    inputs = ([network.W] if learned else []) + ([] if network.pathway is None else list(network.pathway.parameters()))
    with torch.enable_grad():
        exact = torch.autograd.grad(walkback_losses(network, operator, states, temperatures, weight_power,
                                                    targets, continuous_q).sum(), inputs)
    cosines = {}
    if learned:
        cosines["rule_gradient_cosine"] = matrix_cosine(update.grad_W[..., v:, :v], exact[0][..., v:, :v])
    if network.pathway is not None:
        names = [name for name, _ in network.pathway.named_parameters()]
        rule = torch.cat([update.grad_pathway[name].reshape(-1) for name in names])
        autograd = torch.cat([g.reshape(-1) for g in exact[int(learned):]])
        cosines["pathway_gradient_cosine"] = matrix_cosine(rule[None], autograd[None])
    return cosines


@torch.no_grad()
def kolen_pollack_step(network: RecurrentNetwork, W_vh_before: torch.Tensor, decay: float) -> None:
    """The Kolen-Pollack update of the feedback synapses, after the optimiser moved W_vh by u:

        W_vh <- W_vh_before + u - decay W_vh_before,     B <- B + u^T - decay B

    (in place), so B - W_vh^T <- (1 - decay) (B - W_vh^T) whatever u is: each feedback synapse B_ij changes
    by the change of its forward partner W_vh,ji (a local mirror of that synapse's update) and both decay.
    ``W_vh_before``: W[..., :n_visible, n_visible:] before the optimiser's step, (n_visible, n_hidden)
    or (R, n_visible, n_hidden)."""
    v = network.n_visible
    W_vh = network.W[..., :v, v:]
    change = W_vh - W_vh_before
    W_vh.sub_(W_vh_before * decay)
    network.feedback_weights.mul_(1.0 - decay).add_(change.mT)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A trajectory's tensor (K, batch, units) as the rows (K batch, units) of one GEMM; with replicas
    (K, R, batch, units) as (R, K batch, units)."""
    if x.dim() == 3:
        return x.reshape(-1, x.shape[-1])
    return x.transpose(0, 1).reshape(x.shape[1], -1, x.shape[-1])


def add_update(update: LocalUpdate, other: LocalUpdate, weight: float) -> LocalUpdate:
    """The rule's update of two loss terms summed, ``other``'s times ``weight``: every gradient, the loss
    and the STDP / equal-time sizes (the update of the summed loss, since each is linear in its term)."""
    def plus(a, b):
        return None if a is None else a + weight * b

    pathway = None if update.grad_pathway is None else \
        {name: grad + weight * other.grad_pathway[name] for name, grad in update.grad_pathway.items()}
    return LocalUpdate(update.grad_W + weight * other.grad_W, update.grad_b + weight * other.grad_b,
                       plus(update.grad_sigma_visible, other.grad_sigma_visible), plus(update.grad_w_T, other.grad_w_T),
                       update.loss + weight * other.loss, update.temporal_norm + weight * other.temporal_norm,
                       update.equal_time_norm + weight * other.equal_time_norm, pathway)


def write_gradients(network: RecurrentNetwork, update: LocalUpdate) -> None:
    """Place the rule's gradients where an optimizer reads them (``.grad``), as autograd would."""
    network.W.grad = update.grad_W.clone()
    network.b.grad = update.grad_b.clone()
    if update.grad_sigma_visible is not None:
        network.sigma_visible.grad = update.grad_sigma_visible.clone()
    if update.grad_w_T is not None:
        network.w_T.grad = update.grad_w_T.clone()
    if update.grad_pathway is not None:
        for name, grad in update.grad_pathway.items():
            getattr(network.pathway, name).grad = grad.clone()


def temporal_term(pre_rate: torch.Tensor, post_before: torch.Tensor, post_after: torch.Tensor) -> torch.Tensor:
    """The rule's temporal factor for one synapse over a sequence: sum_k pre_k (post_after_k - post_before_k).

    Arguments are (steps,) sequences: presynaptic rate at the step's start, postsynaptic value at
    the step's start and at its end, in the order the rule reads the chain.
    """
    return (pre_rate * (post_after - post_before)).sum()


def learning_window(lags: torch.Tensor, membrane_steps: float = 5.0, order: str = "cooling",
                    n_steps: int = 200) -> torch.Tensor:
    """Weight change of one synapse for a presynaptic and a postsynaptic pulse separated by each lag.

    Both units are leaky: a pulse at time t0 leaves exp(-(t - t0) / membrane_steps) for t >= t0.
    A lag tau > 0 puts the presynaptic pulse tau steps before the postsynaptic one, in cooling
    (generative) time. ``order="cooling"`` reads the pair as the rule does in generative time,
    (pre now) x (post next - post now): STDP, positive for small tau > 0, negative for tau <= 0.
    ``order="heating"`` puts the presynaptic pulse tau steps before the postsynaptic one in heating
    time, the order in which the training chain visits them; the rule's change for that pair is
    the cooling window at -tau, of opposite sign at every small lag: reverse STDP.
    Returns (len(lags),) float64, in units of the peak rate squared.
    """
    time = torch.arange(-n_steps, n_steps + 1, dtype=torch.float64)
    decay = lambda onset: torch.where(time >= onset, torch.exp(-(time - onset) / membrane_steps), 0.0)  # noqa: E731
    window = []
    for lag in lags.tolist():
        pre, post = decay(0.0), decay(float(lag))
        if order == "heating":
            pre, post = pre.flip(0), post.flip(0)
        elif order != "cooling":
            raise ValueError(f"order must be 'cooling' or 'heating', got {order!r}")
        window.append(temporal_term(pre[:-1], post[:-1], post[1:]))
    return torch.stack(window)
