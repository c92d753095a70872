"""Grayness of samples: share of ink pixels (> 0.1) that lie in (0.25, 0.75), and mean ink, vs test images."""
import sys, h5py, numpy as np
from asymnet.data import find_data_dir, load_mnist
imgs, _ = load_mnist(find_data_dir(None), "test")
t = imgs.reshape(len(imgs), -1)[:1000] / 255.0
def stats(x):
    ink = x > 0.1
    return ((x > 0.25) & (x < 0.75)).sum() / ink.sum(), ink.mean(), x.mean()
print("test      gray/ink %.3f ink %.3f mean %.3f" % stats(t))
for run in sys.argv[1:]:
    x = np.asarray(h5py.File(f"{run}/log.h5", "r")["samples/final"])
    print(run, "gray/ink %.3f ink %.3f mean %.3f" % stats(np.clip(x, 0, 1)))
