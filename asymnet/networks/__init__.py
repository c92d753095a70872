"""The networks F of a transition operator: the asymmetric recurrent network, an MLP and a U-Net."""

from asymnet.networks.mlp import MLPNetwork
from asymnet.networks.recurrent import RecurrentNetwork, inverse_softplus
from asymnet.networks.unet import UNetNetwork

__all__ = ["MLPNetwork", "RecurrentNetwork", "UNetNetwork", "inverse_softplus"]
