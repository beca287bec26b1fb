"""Experiment (nothing shipped from it): does the lobes U-Net converge on CPU when it sees the whole
volume at about 4 x 4 x 5 mm instead of 40 x 112 x 112 patches at 1.6 mm? Reads the cache of
data.py, trains on seeds 1000-1094, prints the Dice per lobe (RUL RML RLL LUL LLL) on 1095-1099 on
the coarse grid every 300 steps.

    build/train-venv/bin/python models/train/coarse_lobes_experiment.py STEPS

Result on 2 cores (2026-11-24), 1.25 s a step: see README.md."""
import sys, time, numpy as np, torch, torch.nn.functional as F
import pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
CACHE = pathlib.Path(__file__).resolve().parents[2] / 'build' / 'train-cache'
from nets import UNet3d
from train import scale, dice_loss
torch.set_num_threads(2); torch.manual_seed(0)
rng = np.random.default_rng(0)
D = (64, 104, 104)
def coarse(d):
    ct = d['ct'].astype(np.float32); lb = d['lobes']
    # to ~4 x 4 x 5 mm: nearest sampling on an index grid
    zi = np.linspace(0, ct.shape[0]-1, ct.shape[0]//2).round().astype(int)
    yi = np.linspace(0, ct.shape[1]-1, int(ct.shape[1]/2.5)).round().astype(int)
    xi = np.linspace(0, ct.shape[2]-1, int(ct.shape[2]/2.5)).round().astype(int)
    c = scale(ct[np.ix_(zi, yi, xi)]); l = lb[np.ix_(zi, yi, xi)]
    x = np.zeros(D, np.float32); y = np.zeros(D, np.int64)
    z, h, w = (min(a, b) for a, b in zip(c.shape, D))
    x[:z, :h, :w] = c[:z, :h, :w]; y[:z, :h, :w] = l[:z, :h, :w]
    return x, y
data = [coarse(np.load(CACHE / f'{s}.npz')) for s in range(1000, 1100)]
train, val = data[:95], data[95:]
net = UNet3d(1, 6, (8, 16, 32, 64))
opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
steps = int(sys.argv[1]); t0 = time.time()
def evaluate():
    net.eval(); ds = []
    with torch.no_grad():
        for x, y in val:
            p = net(torch.from_numpy(x)[None, None]).argmax(1)[0].numpy()
            ds.append([2*((p==k)&(y==k)).sum()/max(1,(p==k).sum()+(y==k).sum()) for k in range(1, 6)])
    net.train(); return np.array(ds).mean(0).round(3)
for s in range(steps):
    x, y = train[rng.integers(len(train))]
    xt = torch.from_numpy(x)[None, None]; yt = torch.from_numpy(y)[None]
    lo = net(xt); loss = F.cross_entropy(lo, yt) + dice_loss(lo, yt, 6)
    opt.zero_grad(); loss.backward(); opt.step()
    if s % 100 == 0 or s == steps - 1:
        print(s, round(loss.item(), 3), round(time.time()-t0), evaluate() if s % 300 == 0 or s == steps-1 else '', flush=True)
