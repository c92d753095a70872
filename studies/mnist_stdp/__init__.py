"""Scripts of studies/mnist_stdp_experiments.md, run on finished MNIST runs."""
