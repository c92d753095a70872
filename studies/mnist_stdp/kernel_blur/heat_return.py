"""Where does the blur come from? Heat 1,000 test digits with the model's own chain to level k of the
training schedule (k = 0: not at all), cool back down the same temperatures, then 30 more T = 1 steps and
the last step's mean (as generation does). Prints, per k: the top temperature, classifier confident
fraction, agreement of the classifier's label with the true label, and the gray/ink share (test 0.302).
    python -m studies.mnist_stdp.kernel_blur.heat_return RUN_DIR [k ...]
"""
import sys, torch
from asymnet.evaluate import mnist_classifier
from asymnet.model import eval_temperatures, load_run
from asymnet import walkback

run = load_run(sys.argv[1], data_dir=None)
import os; EXTRA = int(os.environ.get("EXTRA", "30"))
ks = [int(a) for a in sys.argv[2:]] or [0, 3, 6, 9]
model, data = run.model, run.data
net, op = model.network, model.operator
clf = mnist_classifier(None, True)
g = torch.Generator().manual_seed(1)
x = data.batch(data.test[:1000], g, torch.float32)
labels = data.labels_test[:1000]
temps = eval_temperatures(model, run.study)  # cold to hot
def gray(v):
    v = v.clamp(0, 1); ink = v > 0.1
    return (((v > 0.25) & (v < 0.75)).sum() / ink.sum()).item()
with torch.no_grad():
    s0 = walkback.settle_hidden(net, op, x, run.study.walkback.settle_steps, g)
    for k in ks:
        s = s0
        for T in temps[:k]:
            d = net(s, T); s = op.mean(s, d) + op.std(d, T) * torch.randn(s.shape, generator=g)
        for T in reversed(temps[:k]):
            d = net(s, T); s = op.mean(s, d) + op.std(d, T) * torch.randn(s.shape, generator=g)
        for i in range(EXTRA):
            d = net(s, 1.0); s = op.mean(s, d) + (0.0 if i == EXTRA - 1 else 1.0) * op.std(d, 1.0) * torch.randn(s.shape, generator=g)
        v = s[:, :data.n_visible]
        p = torch.softmax(clf(v.clamp(0, 1).view(-1, 1, 28, 28)), 1)
        conf, lab = p.max(1)
        print(f"k {k:2d} T_top {temps[k-1] if k else 1.0:7.1f}  confident {(conf > 0.9).float().mean():.3f}  "
              f"label kept {(lab == labels).float().mean():.3f}  gray/ink {gray(v):.3f}", flush=True)
