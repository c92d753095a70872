"""asymnet: asymmetric stochastic recurrent networks trained by Variational Walkback."""

__version__ = "0.1.0"
