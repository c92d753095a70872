"""Ground-truth checks of Variational Walkback itself (Algorithm 1) on data whose law is known."""
