"""Grid of test digits after 0, 1, 2, 3 T = 1 mean steps of a run's kernel (rows of 10 digits each):
python -m studies.mnist_stdp.kernel_blur.partner RUN_DIR OUT.png"""
import sys, torch
from asymnet.model import load_run
from asymnet.plots import plot_image_grid
from asymnet import walkback
run = load_run(sys.argv[1], data_dir=None)
net, op, data = run.model.network, run.model.operator, run.data
g = torch.Generator().manual_seed(1)
s = walkback.settle_hidden(net, op, data.batch(data.test[:10], g, torch.float32), run.study.walkback.settle_steps, g)
rows = []
with torch.no_grad():
    for k in range(4):
        rows.append(s[:, :data.n_visible].clone())
        d = net(s, 1.0); s = op.mean(s, d)
        print(k, "pixel range %.2f .. %.2f" % (rows[-1].min(), rows[-1].max()))
plot_image_grid(torch.cat(rows).clamp(0, 1).numpy(), sys.argv[2])
