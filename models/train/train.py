"""Train one of the three models on the cached phantom studies and export it to ONNX.

    train.py lobes|opacities|classifier --cache DIR --out models/

Deterministic: every random draw comes from seeded generators (numpy, torch), and the step count is
fixed, so a rerun on the same machine gives the same weights.
"""
import argparse
import json
import pathlib
import time

import numpy as np
import torch
import torch.nn.functional as F

import export
from data import resample_linear, resample_nearest, seed_range
from nets import Classifier, UNet3d
from spec import CLASSIFIER_SEEDS, CLS_DIMS, LOBES_MULTIPLE, OPACITIES_PATCH, SEG_OVERLAP, TRAIN_SEEDS, WINDOW

# Steps and sizes per model, measured to fit the stated running time on 2 CPU cores.
CONFIG = {
    # polish: optional steps of cross-entropy alone after the main run. Soft Dice pushes every
    # boundary voxel with some of a class towards that class (the shipped model's lungs come out
    # 2-3 % too large); cross-entropy against fractions is calibrated. NOT part of the shipped
    # model (0 steps): 300 steps from the shipped lobes.onnx (--polish-from models/lobes.onnx
    # --polish-steps 300, 9 min) moved the held-out Dice by -0.004 to +0.002 (models/train/README.md).
    "lobes": dict(widths=(8, 16, 32, 64), k=6, steps=1100, lr=2e-3, polish=0, polish_lr=3e-4),
    # The lung mask is a second input channel (pulmo gives the lobes model's union): inside it a
    # dense region is consolidation, outside it the same HU is chest wall or heart, which the CT
    # alone cannot tell apart within a patch (1.0.0, CT only, found 20 % of a consolidated lobe).
    # tune: a second phase in which the lung channel is, more than half the time, the mask that the
    # shipped lobes model gives on the training study (run through ONNX Runtime, as pulmo runs it):
    # that mask runs a few millimetres into the diaphragm, whose density the first phase had only
    # seen outside the mask and labelled consolidation there (2-3 % of a normal lower lobe).
    # hard_share: the share of the second phase's patches centred on a voxel that the first phase
    # gets wrong (run as pulmo runs it). 0 in the shipped recipe: 0.3 (--hard-share 0.3), seed for
    # seed on three second phases, lowered the PLO 95th percentile but also the nodules' opacity
    # Dice, the goal with no margin (models/train/README.md, "Hard examples").
    # steps: 4000 in the recipe. Twice as many (--steps 8000, 71 min) gave the best full-size opacity
    # Dice of the retrained runs and found opacity in more clean lobes of small studies (README, "Twice the steps").
    # small_share: the share of the second phase's patches drawn from small studies (0: studies drawn
    # uniformly, about a quarter of them small). 0 in the recipe (README, "Small studies' share").
    "opacities": dict(widths=(8, 16, 32, 48), k=3, patch=OPACITIES_PATCH, steps=4000, lr=2e-3, focus="opac",
                      lung_channel=True, tune=1500, tune_lr=5e-4, predicted_share=0.6, hard_share=0.0,
                      small_share=0.0),
    # predicted_share: how often a training study's opacity channel is the map that the shipped
    # lobes and opacities models give (as in pulmo) rather than the truth. Trained on truth maps
    # alone, the 1.0.0 classifier had never seen a model's false positives: given the maps of the
    # first-phase 1.1.0 opacities model it scored AUC 0.60 on the held-out phantoms.
    "classifier": dict(steps=800, lr=1e-3, predicted_share=0.75),
}


# Where the steps run: "cpu" (the stated times) or "cuda" (`--device cuda`, a GPU session).
DEVICE = torch.device("cpu")


def tensor(a):
    """A numpy array as a tensor on DEVICE."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(DEVICE)


def scale(ct):
    lo, hi = WINDOW
    return (np.clip(ct.astype(np.float32), lo, hi) - lo) / (hi - lo)


def load(cache, keys, seeds=TRAIN_SEEDS):
    studies = []
    for s in seeds:
        path = pathlib.Path(cache) / f"{s}.npz"
        if not path.exists():
            raise SystemExit(f"{path} missing: run data.py for seed {s}")
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


def one_of(flat, shape, rng):
    """A voxel (z, y, x) drawn from the flat indices `flat` of a volume of `shape`."""
    return np.unravel_index(int(flat[rng.integers(len(flat))]), shape)


def sample_patch(study, target, patch, focus, rng, lung=False, predicted_share=0.0, hard_share=0.0):
    shape = study["ct"].shape
    centre = None
    # Drawn only when asked for, so that hard_share = 0 leaves the random stream as it was.
    if hard_share and rng.random() < hard_share and len(study.get("hard", ())):
        centre = one_of(study["hard"], shape, rng)
    elif focus and rng.random() < 0.6:
        idx = study.get("_focus")
        if idx is None:
            idx = np.flatnonzero(study[focus].ravel()[::7]) * 7
            study["_focus"] = idx
        if len(idx):
            centre = one_of(idx, shape, rng)
    if centre is None:
        box = study.setdefault("_box", lung_box(study["lobes"]))
        centre = [int(rng.integers(lo - p // 4, hi + p // 4 + 1)) for (lo, hi), p in zip(box, patch)]
    jitter = [int(rng.integers(-p // 4, p // 4 + 1)) for p in patch]
    start = [c - p // 2 + j for c, p, j in zip(centre, patch, jitter)]
    x = crop(study["ct"], start, patch, -1024)
    y = crop(study[target], start, patch, 0)
    if not lung:
        return scale(x)[None], y
    if "lung_pred" in study and rng.random() < predicted_share:
        mask = crop(study["lung_pred"], start, patch, 0).astype(np.float32)
    else:
        mask = jitter_mask(crop(study["lobes"], start, patch, 0) > 0, rng)
    return np.stack([scale(x), mask]), y


def cached_per_study(studies, cache, kind, model_files, key, compute):
    """`compute(study, session)` for each study, saved once per set of model files (their sha256)
    under cache/<kind>-<digest>/<seed>.npy, and kept in `study[key]`. The session is the last
    model file's, opened only if something must be computed."""
    import hashlib

    import onnxruntime as ort

    digest = hashlib.sha256(b"".join(pathlib.Path(f).read_bytes() for f in model_files)).hexdigest()[:16]
    folder = pathlib.Path(cache) / f"{kind}-{digest}"
    folder.mkdir(exist_ok=True)
    session = None
    for s in studies:
        path = folder / f"{s['meta']['seed']}.npy"
        if not path.exists():
            if session is None:
                session = ort.InferenceSession(str(model_files[-1]), providers=["CPUExecutionProvider"])
            np.save(path, compute(s, session))
        s[key] = np.load(path)


def predicted_lungs(studies, lobes_onnx, cache):
    """The lung mask the lobes model (`lobes_onnx`, as shipped) gives on each cached study, on the
    cache's grid: the whole chest on the lobes grid, padded as pulmo pads it, probabilities
    interpolated back trilinearly, argmax."""

    def compute(s, session):
        x, _ = coarse_lobes(s)
        logits = session.run(None, {"ct": scale(x)[None, None]})[0][0]
        to = tuple(max(1, int(round(n / 2))) for n in s["ct"].shape)
        logits = logits[:, : to[0], : to[1], : to[2]]
        p = np.exp(logits - logits.max(0, keepdims=True))
        p /= p.sum(0, keepdims=True)
        # Lung where some lobe beats background after interpolation (pulmo's argmax).
        back = resample_linear(p[0], s["ct"].shape)
        lobe = np.max(np.stack([resample_linear(p[c], s["ct"].shape) for c in range(1, p.shape[0])]), 0)
        return (lobe > back).astype(np.uint8)

    cached_per_study(studies, cache, "lung-pred", [lobes_onnx], "lung_pred", compute)


def positions(n, p, o):
    """Patch starts along an axis, as src/infer/run.rs places them."""
    if n <= p:
        return [0]
    step = max(p - o, 1)
    out = [i * step for i in range(n) if i * step + p < n]
    return sorted(set(out + [n - p]))


def axis_weights(start, p, n, overlap):
    """Blending weights along one axis of a patch, as src/infer/run.rs gives them."""
    q = overlap // 4
    ramp = max(overlap / 2.0 - q, 0.0) + 1.0
    w = np.ones(p, np.float32)
    for t in range(p):
        d = min([t] * (start > 0) + [p - 1 - t] * (start + p < n), default=None)
        if d is not None:
            w[t] = 0.0 if d < q else min((d - q + 1.0) / ramp, 1.0)
    return w


def segment_like_pulmo(session, ct, lung, patch, overlap):
    """Opacity labels of one cached study as pulmo computes them: overlapping patches (only those
    holding lung), softmax blended with pulmo's weights, argmax, kept inside the lung."""
    acc, wsum = blend_like_pulmo(session, ct, lung, patch, overlap)
    labels = acc.argmax(0).astype(np.uint8)
    labels[(wsum == 0) | ~lung.astype(bool)] = 0
    return labels


def blend_like_pulmo(session, ct, lung, patch, overlap):
    """The weighted sum of the patches' softmax (classes first) and the sum of the weights."""
    dims = ct.shape
    x = np.stack([scale(ct), lung.astype(np.float32)])
    acc = np.zeros((3,) + dims, np.float32)
    wsum = np.zeros(dims, np.float32)
    starts = [positions(n, p, overlap) for n, p in zip(dims, patch)]
    for z in starts[0]:
        for y in starts[1]:
            for xx in starts[2]:
                sl = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(xx, xx + patch[2]))
                if not lung[sl].any():
                    continue
                inp = np.zeros((1, 2) + tuple(patch), np.float32)
                part = x[(slice(None),) + sl]
                inp[0, :, : part.shape[1], : part.shape[2], : part.shape[3]] = part
                logits = session.run(None, {"ct": inp})[0][0]
                e = np.exp(logits - logits.max(0, keepdims=True))
                prob = (e / e.sum(0, keepdims=True))[:, : part.shape[1], : part.shape[2], : part.shape[3]]
                w = (axis_weights(z, patch[0], dims[0], overlap)[: part.shape[1], None, None]
                     * axis_weights(y, patch[1], dims[1], overlap)[None, : part.shape[2], None]
                     * axis_weights(xx, patch[2], dims[2], overlap)[None, None, : part.shape[3]])
                acc[(slice(None),) + sl] += prob * w
                wsum[sl] += w
    return acc, wsum


def predicted_opacity_maps(studies, lobes_onnx, opacities_onnx, cache):
    """The classifier's opacity channel as pulmo gives it: the opacities model's labels inside the
    lobes model's lungs, on the classifier grid."""
    predicted_lungs(studies, lobes_onnx, cache)

    def compute(s, session):
        labels = segment_like_pulmo(session, s["ct"], s["lung_pred"], OPACITIES_PATCH, SEG_OVERLAP)
        return resample_nearest(labels, CLS_DIMS)

    cached_per_study(studies, cache, "opacity-pred", [lobes_onnx, opacities_onnx], "cls_opac_pred", compute)


def first_phase_errors(studies, net, lobes_onnx, cache):
    """Where the first-phase opacities model is wrong on each training study, run as pulmo runs it
    (the lobes model's lung mask, overlapping patches, blended): the flat indices of its false and
    missed opacity voxels, kept in `study["hard"]` for the second phase to centre patches on."""
    path = pathlib.Path(cache) / "opacities-main.onnx"
    net.eval()
    export.patch_net(net, ["ct", "lung"], path)
    net.to(DEVICE).train()  # the export is from the CPU

    def compute(s, session):
        labels = segment_like_pulmo(session, s["ct"], s["lung_pred"], OPACITIES_PATCH, SEG_OVERLAP)
        return np.flatnonzero((labels > 0) != (s["opac"] > 0)).astype(np.int64)

    cached_per_study(studies, cache, "opacity-errors", [lobes_onnx, path], "hard", compute)


def jitter_mask(mask, rng):
    """The truth lung mask, grown or shrunk by one voxel at random: pulmo gives the lobes model's
    mask, whose border is off by about a voxel (the 1.0.0 lungs came out 2.5 % too large)."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    r = rng.random()
    if r < 0.35:
        m = F.max_pool3d(m, 3, stride=1, padding=1)
    elif r < 0.6:
        m = -F.max_pool3d(-m, 3, stride=1, padding=1)
    return m[0, 0].numpy()


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
            p = net(tensor(scale(x))[None, None]).argmax(1)[0].cpu().numpy()
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
    net = UNet3d(1, cfg["k"], cfg["widths"]).to(DEVICE)
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
        xt = tensor(scale(noisy))[None, None]
        yt = tensor(y)[None]
        logits = net(xt)
        ce = F.cross_entropy(logits, yt)
        dl = soft_dice_loss(logits, yt)
        loss = ce + dl
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        now = torch.stack([ce.detach(), dl.detach()]).cpu().numpy()
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
        logits = net(tensor(scale(noisy))[None, None])
        loss = F.cross_entropy(logits, tensor(y)[None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 50 == 0 or step == cfg["polish"] - 1:
            extra = f" held-out Dice RUL RML RLL LUL LLL {held_dice()}" if step == cfg["polish"] - 1 else ""
            print(f"lobes polish {step} ce {running:.4f} {time.time() - t0:.0f}s{extra}", file=log, flush=True)


def load_onnx_weights(net, onnx_path):
    """Weights of an exported model back into its network (the exporter keeps the state-dict names)."""
    import onnx
    from onnx import numpy_helper

    init = {i.name: numpy_helper.to_array(i) for i in onnx.load(onnx_path).graph.initializer}
    state = net.state_dict()
    missing = [k for k in state if k not in init]
    if missing:
        raise SystemExit(f"{onnx_path}: no weights for {missing[:3]}")
    net.load_state_dict({k: torch.from_numpy(init[k].copy()) for k in state})


def train_opacities(cache, out, log, lobes_onnx=None, tune_from=None, tune_seed=0, extra_seeds=range(0)):
    name = "opacities"
    cfg = CONFIG[name]
    studies = load(cache, ["ct", "lobes", "opac"]) + load(cache, ["ct", "lobes", "opac"], seeds=extra_seeds)
    rng = np.random.default_rng(20201124 + len(name))
    torch.manual_seed(1234)
    lung = cfg.get("lung_channel", False)
    net = UNet3d(2 if lung else 1, cfg["k"], cfg["widths"]).to(DEVICE)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=cfg["steps"], pct_start=0.1)
    t0 = time.time()
    if tune_from:
        net.load_state_dict(torch.load(tune_from, map_location=DEVICE))
        # The first phase's time, saved beside its weights, so the manifest states the whole run.
        took = pathlib.Path(tune_from).with_suffix(".seconds")
        if took.is_file():
            t0 -= float(took.read_text())
    else:
        seg_steps(name, net, opt, sched, studies, cfg, cfg["steps"], rng, log, t0)
        torch.save(net.state_dict(), pathlib.Path(cache) / f"{name}-main.pt")
        (pathlib.Path(cache) / f"{name}-main.seconds").write_text(f"{time.time() - t0:.0f}\n")
    steps = cfg["steps"]
    if cfg.get("tune"):
        if not lobes_onnx:
            raise SystemExit("opacities: --lobes LOBES.onnx is needed (the lobes model the lung channel comes from)")
        predicted_lungs(studies, lobes_onnx, cache)
        if cfg["hard_share"]:
            first_phase_errors(studies, net, lobes_onnx, cache)
        # Its own seeds, so that a run from the saved first phase (--tune-from) gives the same model;
        # --tune-seed N shifts them, for the candidates of this phase choose_opacities.py picks from.
        rng = np.random.default_rng(20201126 + tune_seed)
        torch.manual_seed(5678 + tune_seed)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg["tune_lr"], weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["tune"])
        seg_steps(name, net, opt, sched, studies, cfg, cfg["tune"], rng, log, time.time(),
                  predicted_share=cfg["predicted_share"], label=f"{name} tune",
                  hard_share=cfg["hard_share"], small_share=cfg["small_share"])
        steps += cfg["tune"]
    net.eval()
    export.segmentation(net, name, out, training_s=time.time() - t0, steps=steps,
                        channels=["ct", "lung"] if lung else ["ct"], extra_seeds=extra_seeds)


def seg_step(net, opt, sched, x, y, k):
    """One gradient step of a segmentation U-Net on patch `x` (channels first), labels `y`;
    returns the cross-entropy and the Dice loss."""
    xt = tensor(x)[None]
    yt = tensor(y.astype(np.int64))[None]
    logits = net(xt)
    ce = F.cross_entropy(logits, yt)
    dl = dice_loss(logits, yt, k)
    loss = ce + dl
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    return torch.stack([ce.detach(), dl.detach()]).cpu().numpy()


def seg_steps(name, net, opt, sched, studies, cfg, n, rng, log, t0, predicted_share=0.0, label=None, hard_share=0.0,
              small_share=0.0):
    lung = cfg.get("lung_channel", False)
    label = label or name
    running = None
    small = [s for s in studies if s["meta"]["size"] == "small"]
    full = [s for s in studies if s["meta"]["size"] != "small"]
    if small_share and not (small and full):
        raise SystemExit("opacities: --small-share needs both small and full-size training studies")
    for step in range(n):
        if small_share:
            # Drawn only when asked for, so that small_share = 0 leaves the random stream as it was.
            pool = small if rng.random() < small_share else full
        else:
            pool = studies
        study = pool[int(rng.integers(len(pool)))]
        x, y = sample_patch(study, "opac", cfg["patch"], cfg["focus"], rng, lung=lung,
                            predicted_share=predicted_share, hard_share=hard_share)
        if rng.random() < 0.5:
            # Opacities have no side: mirror left-right for more variety (lobes do have one).
            x, y = x[..., ::-1].copy(), y[..., ::-1].copy()
        now = seg_step(net, opt, sched, x, y, cfg["k"])
        running = now if running is None else 0.98 * running + 0.02 * now
        if step % 50 == 0 or step == n - 1:
            print(f"{label} step {step} ce {running[0]:.4f} dice-loss {running[1]:.4f} "
                  f"{time.time() - t0:.0f}s", file=log, flush=True)


def train_classifier(cache, out, log, lobes_onnx=None, opacities_onnx=None):
    cfg = CONFIG["classifier"]
    studies = load(cache, ["ct", "lobes", "cls_ct", "cls_opac", "covid"], seeds=CLASSIFIER_SEEDS)
    if cfg["predicted_share"] > 0:
        if not (lobes_onnx and opacities_onnx):
            raise SystemExit("classifier: --lobes and --opacities (ONNX) are needed: it learns from their maps")
        predicted_opacity_maps(studies, lobes_onnx, opacities_onnx, cache)
    x_all = np.stack([np.stack([scale(s["cls_ct"]), s["cls_opac"].astype(np.float32) / 2.0]) for s in studies])
    pred_all = np.stack([s["cls_opac_pred"].astype(np.float32) / 2.0 if "cls_opac_pred" in s
                         else s["cls_opac"].astype(np.float32) / 2.0 for s in studies])
    for s in studies:
        # Only the classifier grids are needed from here on.
        s.pop("ct"), s.pop("lobes"), s.pop("lung_pred", None)
    y_all = np.array([int(s["covid"]) for s in studies])
    rng = np.random.default_rng(20201125)
    torch.manual_seed(4321)
    net = Classifier().to(DEVICE)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=1e-3)
    t0 = time.time()
    running = None
    for step in range(cfg["steps"]):
        idx = rng.integers(len(studies), size=8)
        x = x_all[idx].copy()
        for i in range(len(idx)):
            if rng.random() < cfg["predicted_share"]:
                x[i, 1] = pred_all[idx[i]]
            if rng.random() < 0.5:
                x[i] = x[i][:, :, :, ::-1]
            # The segmentation model's map is not the truth: drop and add a little opacity.
            o = x[i, 1]
            noise = rng.random(o.shape) < 0.002
            o[noise & (x[i, 0] < 0.3)] = 0.5
            o[(rng.random(o.shape) < 0.05)] = 0.0
            x[i, 0] += rng.normal(0, 0.01, size=x[i, 0].shape).astype(np.float32)
        logits = net(tensor(x))
        loss = F.cross_entropy(logits, tensor(y_all[idx]))
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
    ap.add_argument("--polish-from", help="lobes: run only the polish, from these saved weights (.pt or .onnx)")
    ap.add_argument("--polish-steps", type=int, help="lobes: polish steps (default: CONFIG)")
    ap.add_argument("--lobes", help="opacities: the lobes model (ONNX) whose lung mask the second phase is given")
    ap.add_argument("--opacities", help="classifier: the opacities model (ONNX) whose maps it learns from")
    ap.add_argument("--tune-from", help="opacities: run only the second phase, from these saved first-phase weights")
    ap.add_argument("--tune-seed", type=int, default=0,
                    help="opacities: shift the second phase's seeds (0: the shipped recipe), "
                         "for choose_opacities.py")
    ap.add_argument("--hard-share", type=float,
                    help="opacities: share of the second phase's patches centred on a voxel the first phase "
                         "gets wrong (default: CONFIG)")
    ap.add_argument("--small-share", type=float,
                    help="opacities: share of the second phase's patches drawn from small studies (default: "
                         "CONFIG, 0: uniform over the studies; an experiment: models/train/README.md, "
                         "\"Small studies' share\")")
    ap.add_argument("--extra-seeds", type=seed_range, default=range(0),
                    help="opacities: FIRST:LAST, cached studies to train on besides TRAIN_SEEDS (an experiment: "
                         "models/train/README.md, \"Twice the training studies\")")
    ap.add_argument("--steps", type=int,
                    help="opacities: first-phase steps (default: CONFIG; an experiment: models/train/README.md, "
                         "\"Twice the steps\"); with --tune-from, the first phase's, for the manifest's count")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda in a GPU session (not bit-identical to cpu)")
    a = ap.parse_args()
    DEVICE = torch.device(a.device)
    # Before --smoke, which makes every run 3 steps.
    if a.steps is not None:
        CONFIG["opacities"]["steps"] = a.steps
    if a.smoke:
        for cfg in CONFIG.values():
            cfg["steps"] = 3
            for extra in ("polish", "tune"):
                if cfg.get(extra):
                    cfg[extra] = 2
        _load = load
        load = lambda cache, keys, seeds=TRAIN_SEEDS: _load(cache, keys, seeds=seeds[:4])  # noqa: E731
    if a.hard_share is not None:
        CONFIG["opacities"]["hard_share"] = a.hard_share
    if a.small_share is not None:
        CONFIG["opacities"]["small_share"] = a.small_share
    if a.polish_steps is not None:
        CONFIG["lobes"]["polish"] = a.polish_steps
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True, warn_only=True)
    import sys

    if a.model == "classifier":
        train_classifier(a.cache, a.out, sys.stdout, lobes_onnx=a.lobes, opacities_onnx=a.opacities)
    elif a.model == "lobes":
        if a.polish_from:
            # Only the polish, from saved main-run weights (to try the polish without the main run).
            cfg = CONFIG["lobes"]
            data = [coarse_lobes(s) for s in load(a.cache, ["ct", "lobes"])]
            net = UNet3d(1, cfg["k"], cfg["widths"]).to(DEVICE)
            if a.polish_from.endswith(".onnx"):
                load_onnx_weights(net, a.polish_from)
            else:
                net.load_state_dict(torch.load(a.polish_from, map_location=DEVICE))
            held = data[-5:]

            def held_dice():
                return lobes_dice(net, held)

            print(f"lobes before the polish: held-out Dice RUL RML RLL LUL LLL {held_dice()}", flush=True)

            polish_lobes(net, data[:-5], cfg, np.random.default_rng(7), sys.stdout, held_dice)
            net.eval()
            export.lobes(net, a.out, training_s=0, steps=cfg["polish"])
        else:
            train_lobes(a.cache, a.out, sys.stdout, monitor=0 if a.smoke else 5)
    else:
        train_opacities(a.cache, a.out, sys.stdout, lobes_onnx=a.lobes, tune_from=a.tune_from,
                        tune_seed=a.tune_seed, extra_seeds=a.extra_seeds)
