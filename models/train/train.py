"""Train one of the three models on the cached phantom studies and export it to ONNX.

    train.py lobes|opacities|classifier --cache DIR --out models/

Deterministic: every random draw comes from seeded generators (numpy, torch), and the step count is
fixed, so a rerun on the same machine gives the same weights.
"""
import argparse
import glob
import json
import pathlib
import time

import numpy as np
import torch
import torch.nn.functional as F

import export
from data import resample_linear
from nets import Classifier, UNet3d
from spec import LOBES_MULTIPLE, OPACITIES_PATCH, TRAIN_SEEDS, WINDOW

# Steps and sizes per model, measured to fit the stated running time on 2 CPU cores.
CONFIG = {
    # polish: optional steps of cross-entropy alone after the main run. Soft Dice pushes every
    # boundary voxel with some of a class towards that class (the shipped model's lungs come out
    # 2-3 % too large); cross-entropy against fractions is calibrated. NOT part of the shipped
    # model (0 steps) and not measured yet: try it with --polish-from build/train-cache/lobes-main.pt.
    "lobes": dict(widths=(8, 16, 32, 64), k=6, steps=1100, lr=2e-3, polish=0, polish_lr=3e-4),
    "opacities": dict(widths=(8, 16, 32, 48), k=3, patch=OPACITIES_PATCH, steps=1500, lr=2e-3, focus="opac"),
    "classifier": dict(steps=800, lr=1e-3),
}


def scale(ct):
    lo, hi = WINDOW
    return (np.clip(ct.astype(np.float32), lo, hi) - lo) / (hi - lo)


def load(cache, keys, seeds=TRAIN_SEEDS):
    studies = []
    for s in seeds:
        path = pathlib.Path(cache) / f"{s}.npz"
        if not path.exists():
            raise SystemExit(f"{path} missing: run data.py for seeds {TRAIN_SEEDS.start}:{TRAIN_SEEDS.stop - 1}")
        d = np.load(path)
        studies.append({k: d[k] for k in keys} | {"meta": json.loads(str(d["meta"]))})
    return studies


def lung_box(lobes):
    zz, yy, xx = np.nonzero(lobes)
    return [(int(a.min()), int(a.max())) for a in (zz, yy, xx)]


def crop(arr, start, patch, fill):
    out = np.full(patch, fill, dtype=arr.dtype)
    src = tuple(slice(max(s, 0), min(s + p, n)) for s, p, n in zip(start, patch, arr.shape))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start))
    out[dst] = arr[src]
    return out


def sample_patch(study, target, patch, focus, rng):
    shape = study["ct"].shape
    centre = None
    if focus and rng.random() < 0.6:
        idx = study.get("_focus")
        if idx is None:
            idx = np.flatnonzero(study[focus].ravel()[::7]) * 7
            study["_focus"] = idx
        if len(idx):
            centre = np.unravel_index(int(idx[rng.integers(len(idx))]), shape)
    if centre is None:
        box = study.setdefault("_box", lung_box(study["lobes"]))
        centre = [int(rng.integers(lo - p // 4, hi + p // 4 + 1)) for (lo, hi), p in zip(box, patch)]
    jitter = [int(rng.integers(-p // 4, p // 4 + 1)) for p in patch]
    start = [c - p // 2 + j for c, p, j in zip(centre, patch, jitter)]
    x = crop(study["ct"], start, patch, -1024)
    y = crop(study[target], start, patch, 0)
    return scale(x), y


def dice_loss(logits, y, k):
    """Soft Dice over the foreground classes present in the patch. A class absent from the patch
    is left to the cross-entropy: its Dice would be about 0 for any non-zero probability mass,
    a constant penalty that drowns the signal of the classes that are there."""
    p = logits.softmax(dim=1)
    onehot = F.one_hot(y, k).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)
    inter = (p * onehot).sum(dims)
    present = onehot.sum(dims)
    denom = p.sum(dims) + present
    dice = (2 * inter + 1.0) / (denom + 1.0)
    # A class with a handful of voxels at the patch edge gives a Dice of 0 or 1 by chance.
    mask = present[1:] > 50
    if not bool(mask.any()):
        return logits.new_zeros(())
    return 1.0 - dice[1:][mask].mean()


def coarse_lobes(study, rng=None):
    """One cached study on the lobes grid (twice the cache's spacing, as pulmo's
    ModelGrid::with_spacing gives), padded with air at the far ends to a multiple of LOBES_MULTIPLE:
    scaled CT and, per class, the fraction of each coarse voxel it fills."""
    to = tuple(max(1, int(round(n / 2))) for n in study["ct"].shape)
    ct = resample_linear(study["ct"], to)
    k = 6
    frac = np.stack([resample_linear((study["lobes"] == c).astype(np.float32), to) for c in range(k)])
    full = tuple(-(-n // LOBES_MULTIPLE) * LOBES_MULTIPLE for n in to)
    x = np.full(full, -1000.0, np.float32)
    y = np.zeros((k,) + full, np.float32)
    y[0] = 1.0
    x[: to[0], : to[1], : to[2]] = ct
    y[:, : to[0], : to[1], : to[2]] = frac
    return x, y


def soft_dice_loss(logits, target):
    """Soft Dice against class fractions, over the foreground classes present."""
    p = logits.softmax(dim=1)
    dims = (0, 2, 3, 4)
    inter = (p * target).sum(dims)
    present = target.sum(dims)
    dice = (2 * inter + 1.0) / (p.sum(dims) + present + 1.0)
    mask = present[1:] > 1.0
    return 1.0 - dice[1:][mask].mean()


def lobes_dice(net, held):
    """Dice per lobe (RUL RML RLL LUL LLL) on the coarse grid over `held` studies, as text."""
    net.eval()
    ds = []
    with torch.no_grad():
        for x, y in held:
            p = net(torch.from_numpy(scale(x))[None, None]).argmax(1)[0].numpy()
            t = y.argmax(0)
            ds.append([2 * ((p == c) & (t == c)).sum() / max(1, (p == c).sum() + (t == c).sum())
                       for c in range(1, 6)])
    net.train()
    return " ".join(f"{v:.3f}" for v in np.mean(ds, axis=0))


def train_lobes(cache, out, log, monitor=5):
    """The whole volume at once. The last `monitor` training seeds are held out of the gradient
    steps and only report Dice on the coarse grid while training runs."""
    cfg = CONFIG["lobes"]
    studies = load(cache, ["ct", "lobes"])
    data = [coarse_lobes(s) for s in studies]
    train, held = data[:-monitor] if monitor else data, data[-monitor:] if monitor else []
    rng = np.random.default_rng(20201124)
    torch.manual_seed(1234)
    net = UNet3d(1, cfg["k"], cfg["widths"])
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["steps"], pct_start=0.15)
    t0 = time.time()
    running = None

    def held_dice():
        return lobes_dice(net, held)

    for step in range(cfg["steps"]):
        x, y = train[int(rng.integers(len(train)))]
        # pulmo samples the source CT with two taps per axis, the cache averaged more of it:
        # add back noise so that the model sees at least pulmo's noise level.
        noisy = x + rng.normal(0.0, rng.uniform(0.0, 15.0), size=x.shape).astype(np.float32)
        xt = torch.from_numpy(scale(noisy))[None, None]
        yt = torch.from_numpy(y)[None]
        logits = net(xt)
        ce = F.cross_entropy(logits, yt)
        dl = soft_dice_loss(logits, yt)
        loss = ce + dl
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        now = torch.stack([ce.detach(), dl.detach()]).numpy()
        running = now if running is None else 0.95 * running + 0.05 * now
        if step % 50 == 0 or step == cfg["steps"] - 1:
            extra = f" held-out Dice RUL RML RLL LUL LLL {held_dice()}" if held and (step % 200 == 0 or step == cfg["steps"] - 1) else ""
            print(f"lobes step {step} ce {running[0]:.4f} dice-loss {running[1]:.4f} "
                  f"{time.time() - t0:.0f}s{extra}", file=log, flush=True)
        if step % 200 == 199:
            torch.save(net.state_dict(), pathlib.Path(cache) / "lobes-checkpoint.pt")
    torch.save(net.state_dict(), pathlib.Path(cache) / "lobes-main.pt")
    polish_lobes(net, train, cfg, rng, log, held_dice)
    net.eval()
    export.lobes(net, out, training_s=time.time() - t0, steps=cfg["steps"] + cfg["polish"])


def polish_lobes(net, train, cfg, rng, log, held_dice):
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["polish_lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg["polish"]))
    running = None
    t0 = time.time()
    for step in range(cfg["polish"]):
        x, y = train[int(rng.integers(len(train)))]
        noisy = x + rng.normal(0.0, rng.uniform(0.0, 15.0), size=x.shape).astype(np.float32)
        logits = net(torch.from_numpy(scale(noisy))[None, None])
        loss = F.cross_entropy(logits, torch.from_numpy(y)[None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 50 == 0 or step == cfg["polish"] - 1:
            extra = f" held-out Dice RUL RML RLL LUL LLL {held_dice()}" if step == cfg["polish"] - 1 else ""
            print(f"lobes polish {step} ce {running:.4f} {time.time() - t0:.0f}s{extra}", file=log, flush=True)


def train_seg(name, cache, out, log):
    cfg = CONFIG[name]
    target = "lobes" if name == "lobes" else "opac"
    studies = load(cache, ["ct", "lobes"] + (["opac"] if target == "opac" else []))
    rng = np.random.default_rng(20201124 + len(name))
    torch.manual_seed(1234)
    net = UNet3d(1, cfg["k"], cfg["widths"])
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["steps"], pct_start=0.1)
    t0 = time.time()
    running = None
    for step in range(cfg["steps"]):
        study = studies[int(rng.integers(len(studies)))]
        x, y = sample_patch(study, target, cfg["patch"], cfg["focus"], rng)
        if name == "opacities" and rng.random() < 0.5:
            # Opacities have no side: mirror left-right for more variety (lobes do have one).
            x, y = x[:, :, ::-1].copy(), y[:, :, ::-1].copy()
        xt = torch.from_numpy(x)[None, None]
        yt = torch.from_numpy(y.astype(np.int64))[None]
        logits = net(xt)
        ce = F.cross_entropy(logits, yt)
        dl = dice_loss(logits, yt, cfg["k"])
        loss = ce + dl
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        now = torch.stack([ce.detach(), dl.detach()]).numpy()
        running = now if running is None else 0.98 * running + 0.02 * now
        if step % 50 == 0 or step == cfg["steps"] - 1:
            print(f"{name} step {step} ce {running[0]:.4f} dice-loss {running[1]:.4f} "
                  f"{time.time() - t0:.0f}s", file=log, flush=True)
        if step % 200 == 199:
            # A checkpoint to look at while training goes on (build/, never shipped).
            torch.save(net.state_dict(), pathlib.Path(cache) / f"{name}-checkpoint.pt")
    net.eval()
    export.segmentation(net, name, out, training_s=time.time() - t0, steps=cfg["steps"])


def train_classifier(cache, out, log):
    cfg = CONFIG["classifier"]
    studies = load(cache, ["cls_ct", "cls_opac", "covid"])
    x_all = np.stack([np.stack([scale(s["cls_ct"]), s["cls_opac"].astype(np.float32) / 2.0]) for s in studies])
    y_all = np.array([int(s["covid"]) for s in studies])
    rng = np.random.default_rng(20201125)
    torch.manual_seed(4321)
    net = Classifier()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=1e-3)
    t0 = time.time()
    running = None
    for step in range(cfg["steps"]):
        idx = rng.integers(len(studies), size=8)
        x = x_all[idx].copy()
        for i in range(len(idx)):
            if rng.random() < 0.5:
                x[i] = x[i][:, :, :, ::-1]
            # The segmentation model's map is not the truth: drop and add a little opacity.
            o = x[i, 1]
            noise = rng.random(o.shape) < 0.002
            o[noise & (x[i, 0] < 0.3)] = 0.5
            o[(rng.random(o.shape) < 0.05)] = 0.0
            x[i, 0] += rng.normal(0, 0.01, size=x[i, 0].shape).astype(np.float32)
        logits = net(torch.from_numpy(np.ascontiguousarray(x)))
        loss = F.cross_entropy(logits, torch.from_numpy(y_all[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0 or step == cfg["steps"] - 1:
            print(f"classifier step {step} loss {running:.4f} {time.time() - t0:.0f}s", file=log, flush=True)
    net.eval()
    export.classifier(net, out, training_s=time.time() - t0, steps=cfg["steps"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model", choices=list(CONFIG))
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="3 steps on 4 studies: checks the code path only")
    ap.add_argument("--polish-from", help="lobes: run only the polish, from these saved weights")
    a = ap.parse_args()
    if a.smoke:
        for cfg in CONFIG.values():
            cfg["steps"] = 3
            if "polish" in cfg:
                cfg["polish"] = 2
        _load = load
        load = lambda cache, keys: _load(cache, keys, seeds=range(TRAIN_SEEDS.start, TRAIN_SEEDS.start + 4))  # noqa: E731
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True, warn_only=True)
    import sys

    if a.model == "classifier":
        train_classifier(a.cache, a.out, sys.stdout)
    elif a.model == "lobes":
        if a.polish_from:
            # Only the polish, from saved main-run weights (to try the polish without the main run).
            cfg = CONFIG["lobes"]
            data = [coarse_lobes(s) for s in load(a.cache, ["ct", "lobes"])]
            net = UNet3d(1, cfg["k"], cfg["widths"])
            net.load_state_dict(torch.load(a.polish_from))
            held = data[-5:]

            def held_dice():
                return lobes_dice(net, held)

            polish_lobes(net, data[:-5], cfg, np.random.default_rng(7), sys.stdout, held_dice)
            net.eval()
            export.lobes(net, a.out, training_s=0, steps=cfg["polish"])
        else:
            train_lobes(a.cache, a.out, sys.stdout, monitor=0 if a.smoke else 5)
    else:
        train_seg(a.model, a.cache, a.out, sys.stdout)
