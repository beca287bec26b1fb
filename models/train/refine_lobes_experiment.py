"""Experiment (nothing shipped from it): can a second lobes stage on the 1.6 x 1.6 x 2.5 mm grid, given
the CT and the shipped lobes model's probabilities (3.2 x 3.2 x 5 mm, interpolated), draw the
fissures that the coarse grid barely shows (the middle lobe's Dice is 0.86)?

Reads the cache of data.py and models/lobes.onnx; trains a small U-Net (7 channels in: CT and the
six coarse probabilities; six out) on patches of seeds 1000-1094, half of them centred on a lobe
border; then prints the Dice per lobe (RUL RML RLL LUL LLL) on 1095-1099 (held out of the shipped
lobes model's training too) on the 1.6 mm grid, for the coarse model alone (its probabilities
interpolated, argmax: what pulmo does now) and with the refinement.

    build/train-venv/bin/python models/train/refine_lobes_experiment.py STEPS

The interpolation here is torch's (align_corners=False), not pulmo's separable taps: good enough to
see whether the idea works, not for a shipped model. Result on 2 cores (2026-11-25), in README.md: no better than the coarse model."""
import pathlib
import sys
import time

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from nets import UNet3d  # noqa: E402
from train import coarse_lobes, crop, dice_loss, positions, scale  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "train-cache"
PATCH = (32, 96, 96)
OVERLAP = 8
torch.set_num_threads(2)
torch.manual_seed(0)
rng = np.random.default_rng(0)


def load(seed, session):
    d = np.load(CACHE / f"{seed}.npz")
    s = {"ct": d["ct"], "lobes": d["lobes"]}
    x, _ = coarse_lobes(s)
    logits = session.run(None, {"ct": scale(x)[None, None]})[0][0]
    to = tuple(max(1, int(round(n / 2))) for n in s["ct"].shape)
    logits = logits[:, : to[0], : to[1], : to[2]]
    p = np.exp(logits - logits.max(0, keepdims=True))
    s["coarse"] = (p / p.sum(0, keepdims=True)).astype(np.float16)
    lung = s["lobes"] > 0
    # Lobe borders: a voxel whose lobe differs from the one two voxels further along x, y or z.
    border = np.zeros_like(lung)
    for ax in range(3):
        a = np.swapaxes(s["lobes"], 0, ax)
        b = np.swapaxes(border, 0, ax)
        diff = (a[2:] != a[:-2]) & (a[2:] > 0) & (a[:-2] > 0)
        b[1:-1] |= diff
    s["border"] = np.flatnonzero(border.ravel())
    s["lung"] = np.flatnonzero(lung.ravel()[::5]) * 5
    return s


def upsampled(coarse, start, patch, shape):
    """The coarse probabilities over a fine-grid box (`start`, `patch`), interpolated."""
    lo = [max(0, s // 2 - 1) for s in start]
    hi = [min(c, (s + p) // 2 + 2) for s, p, c in zip(start, patch, coarse.shape[1:])]
    part = torch.from_numpy(coarse[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32))[None]
    up = F.interpolate(part, scale_factor=2, mode="trilinear", align_corners=False)[0].numpy()
    out = np.zeros((6,) + tuple(patch), np.float32)
    out[0] = 1.0
    # Fine voxel f sits at index f - 2 * lo of `up`.
    src = [slice(max(s, 0) - 2 * l, min(s + p, n) - 2 * l) for s, p, l, n in zip(start, patch, lo, shape)]
    dst = [slice(max(s, 0) - s, min(s + p, n) - s) for s, p, n in zip(start, patch, shape)]
    got = up[(slice(None),) + tuple(src)]
    d = tuple(slice(a.start, a.start + g) for a, g in zip(dst, got.shape[1:]))
    out[(slice(None),) + d] = got
    return out


# --shift: the second try. The first (1600 steps, patches only on the lung and its borders) learnt
# to copy the coarse probabilities (Dice inside the lung unchanged) and, never shown the body, called
# a third of it lung. Here one patch in five is anywhere in the volume, and the coarse probabilities
# are shifted against the CT by up to 2 coarse voxels in-plane and 1 in z, so that copying them
# costs and the fissures in the CT (about 80 HU above the lung beside them) pay.
SHIFT = "--shift" in sys.argv


def sample(s):
    shape = s["ct"].shape
    if SHIFT and rng.random() < 0.2:
        centre = [int(rng.integers(n)) for n in shape]
    else:
        idx = s["border"] if rng.random() < 0.5 and len(s["border"]) else s["lung"]
        centre = np.unravel_index(int(idx[rng.integers(len(idx))]), shape)
    start = [int(c) - p // 2 + int(rng.integers(-p // 4, p // 4 + 1)) for c, p in zip(centre, PATCH)]
    x = scale(crop(s["ct"], start, PATCH, -1024))[None]
    shift = [2 * int(rng.integers(-m, m + 1)) for m in (1, 2, 2)] if SHIFT else [0, 0, 0]
    probs = upsampled(s["coarse"], [a + b for a, b in zip(start, shift)], PATCH, shape)
    y = crop(s["lobes"], start, PATCH, 0).astype(np.int64)
    return np.concatenate([x, probs]), y


def refine_volume(net, s):
    shape = s["ct"].shape
    acc = np.zeros((6,) + shape, np.float32)
    wsum = np.zeros(shape, np.float32)
    with torch.no_grad():
        for z in positions(shape[0], PATCH[0], OVERLAP):
            for y in positions(shape[1], PATCH[1], OVERLAP):
                for x in positions(shape[2], PATCH[2], OVERLAP):
                    start = (z, y, x)
                    inp = np.concatenate([scale(crop(s["ct"], start, PATCH, -1024))[None],
                                          upsampled(s["coarse"], start, PATCH, shape)])
                    p = net(torch.from_numpy(inp)[None]).softmax(1)[0].numpy()
                    sl = tuple(slice(a, min(a + b, n)) for a, b, n in zip(start, PATCH, shape))
                    acc[(slice(None),) + sl] += p[(slice(None),) + tuple(slice(0, t.stop - t.start) for t in sl)]
                    wsum[sl] += 1
    return acc.argmax(0)


def coarse_volume(s):
    return upsampled(s["coarse"], (0, 0, 0), s["ct"].shape, s["ct"].shape).argmax(0)


def dice(pred, truth):
    return [2 * ((pred == c) & (truth == c)).sum() / max(1, (pred == c).sum() + (truth == c).sum())
            for c in range(1, 6)]


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    session = ort.InferenceSession(str(ROOT / "models" / "lobes.onnx"), providers=["CPUExecutionProvider"])
    t0 = time.time()
    seeds = list(range(1000, 1100))
    if len(sys.argv) > 2 and sys.argv[2] == "--smoke":
        seeds = seeds[:3] + seeds[-2:]
    studies = [load(seed, session) for seed in seeds]
    print(f"loaded {len(seeds)} studies with coarse probabilities in {time.time() - t0:.0f} s", flush=True)
    train, held = studies[:-5] if len(seeds) > 5 else studies[:3], studies[-5:] if len(seeds) > 5 else studies[3:]
    base = np.mean([dice(coarse_volume(s), s["lobes"]) for s in held], 0)
    print("coarse model alone, 1.6 mm grid, Dice RUL RML RLL LUL LLL:", " ".join(f"{v:.3f}" for v in base), flush=True)
    net = UNet3d(7, 6, (8, 16, 32, 48))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    running = None
    for step in range(steps):
        batch = [sample(train[int(rng.integers(len(train)))]) for _ in range(2)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))
        y = torch.from_numpy(np.stack([b[1] for b in batch]))
        logits = net(x)
        loss = F.cross_entropy(logits, y) + dice_loss(logits, y, 6)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step} loss {running:.4f} {time.time() - t0:.0f}s", flush=True)
    net.eval()
    torch.save(net.state_dict(), CACHE / f"refine-experiment{'-shift' if SHIFT else ''}.pt")
    refined = [refine_volume(net, s) for s in held]
    ref = np.mean([dice(r, s["lobes"]) for r, s in zip(refined, held)], 0)
    print("with the refinement, 1.6 mm grid, Dice RUL RML RLL LUL LLL:", " ".join(f"{v:.3f}" for v in ref), flush=True)
    # Inside the coarse lung only: what the refinement does to the fissures, apart from the lung's edge.
    inside = []
    for r, s in zip(refined, held):
        c = coarse_volume(s)
        inside.append(dice(np.where(c > 0, np.where(r > 0, r, c), 0), s["lobes"]))
    print("refined labels inside the coarse lung, Dice RUL RML RLL LUL LLL:",
          " ".join(f"{v:.3f}" for v in np.mean(inside, 0)), flush=True)


if __name__ == "__main__":
    main()
