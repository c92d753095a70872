"""Per temperature of the training schedule: mean squared error (visible units, per pixel) of the walk
back's mean mu(s_t) against s_{t-1}, beside the error of the identity guess mu = s_t, on heating
trajectories of 500 test digits drawn with the model's own chain.  python -m studies.mnist_stdp.kernel_blur.per_T RUN_DIR"""
import sys, torch
from asymnet.model import eval_temperatures, load_run
from asymnet import walkback
run = load_run(sys.argv[1], data_dir=None)
model, data = run.model, run.data; net, op = model.network, model.operator
g = torch.Generator().manual_seed(1)
x = data.batch(data.test[:500], g, torch.float32)
temps = eval_temperatures(model, run.study); v = data.n_visible
with torch.no_grad():
    s0 = walkback.settle_hidden(net, op, x, run.study.walkback.settle_steps, g)
    states = walkback.heating_trajectory(net, op, s0, temps, g)
    for t, T in enumerate(temps, 1):
        mu = op.mean(states[t], net(states[t], T))[:, :v]
        m = ((states[t-1][:, :v] - mu) ** 2).mean().item(); i = ((states[t-1][:, :v] - states[t][:, :v]) ** 2).mean().item()
        print(f"t {t:2d} T {T:6.1f}  model {m:.5f}  identity {i:.5f}  ratio {m / i:.3f}")
