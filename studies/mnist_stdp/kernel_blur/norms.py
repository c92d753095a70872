import sys, torch
import torch.nn.functional as F
for run in sys.argv[1:]:
    ck = torch.load(f"{run}/checkpoint.pt", map_location="cpu", weights_only=False)
    sd = ck.get("network", ck.get("model", ck))
    if not isinstance(sd, dict) or "W" not in sd:
        sd = next(v for v in ck.values() if isinstance(v, dict) and "W" in v)
    W, b = sd["W"], sd["b"]; v = 784
    sig = F.softplus(sd["sigma_visible"])
    wT = sd.get("w_T")
    print(run, "||W_vv|| %.1f ||W_vh|| %.1f ||W_hv|| %.1f ||b_h|| %.2f |w_T,v| %.4f |w_T,h| %.3f sigma_v mean %.4f median %.4f" % (
        W[:v,:v].norm(), W[:v,v:].norm(), W[v:,:v].norm(), b[v:].norm(), wT[:v].abs().mean(), wT[v:].abs().mean() if len(wT)>v else float('nan'),
        sig.mean(), sig.median()))
