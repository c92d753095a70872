"""The copying check of a finished MNIST run with its uncertainty: the median and 5th percentile of each final
sample's pixel distance to its nearest training image (metrics.quality.nearest_distance, as the run's
nearest_train_distance), against the same figures of the first n_samples test images, and a bootstrap
interval of the difference of the two medians.

    python -m studies.mnist_stdp.copies RUN_DIR [RESAMPLES]

RESAMPLES (default 2,000) bootstrap draws of each set, with replacement; prints the two medians, the two 5th
percentiles and the 95 % interval of median(samples) - median(test). Used for
studies/mnist_stdp_experiments.md.
"""

from __future__ import annotations

import sys

import torch

from asymnet.metrics.quality import nearest_distance
from asymnet.model import load_run
from asymnet.runlog import open_log
from studies.mnist_stdp import positional, positive_int, run_script

USAGE = "python -m studies.mnist_stdp.copies RUN_DIR [RESAMPLES]"


def main(argv: list[str]) -> int:
    run_dir, resamples = positional(argv, USAGE, ("RUN_DIR", str), ("RESAMPLES", positive_int, 2000))
    trained = load_run(run_dir)
    with open_log(run_dir) as log:
        samples = torch.as_tensor(log["samples/final"][()]).clamp(0, 1).float()
    training = trained.data.train.float() / 255.0
    test = trained.data.test[: len(samples)].float() / 255.0
    ds, dt = nearest_distance(samples, training), nearest_distance(test, training)
    gen = torch.Generator().manual_seed(0)
    diffs = torch.tensor([ds[torch.randint(0, len(ds), (len(ds),), generator=gen)].median().item()
                          - dt[torch.randint(0, len(dt), (len(dt),), generator=gen)].median().item()
                          for _ in range(resamples)])
    low, high = diffs.quantile(torch.tensor([0.025, 0.975], dtype=diffs.dtype)).tolist()
    print(f"median: samples {ds.median().item():.3f}, test images {dt.median().item():.3f}; "
          f"5th percentile: samples {ds.quantile(0.05).item():.3f}, test images {dt.quantile(0.05).item():.3f}; "
          f"median difference {ds.median().item() - dt.median().item():+.3f}, 95 % bootstrap interval "
          f"[{low:+.3f}, {high:+.3f}] ({resamples} resamples)")
    return 0


if __name__ == "__main__":
    sys.exit(run_script("studies.mnist_stdp.copies", main))
