"""The networks F of a transition operator: the asymmetric recurrent network and an MLP."""

from asymnet.networks.mlp import MLPNetwork
from asymnet.networks.recurrent import RecurrentNetwork, inverse_softplus

__all__ = ["MLPNetwork", "RecurrentNetwork", "inverse_softplus"]
