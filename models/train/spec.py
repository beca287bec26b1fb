"""What the three models take and give: shared by the data cache, training and export, and written
into each manifest, so that the grid a model trained on is the grid pulmo gives it."""

# Segmentation grid (x, y, z) in mm, about the lung-window, 1 × 1 × 2.5 mm of Jin et al. 2020
# coarsened in-plane to keep 2 CPU cores fast.
SEG_SPACING = (1.6, 1.6, 2.5)
# HU window of every model input, scaled to [0, 1].
WINDOW = (-1000.0, 400.0)
# Patch (z, y, x) each segmentation model trains and runs on (instance normalisation sees the same
# amount of context in both), with the overlap pulmo blends. Lobes need more context (fissures).
LOBES_PATCH = (40, 112, 112)
OPACITIES_PATCH = (32, 96, 96)
SEG_OVERLAP = 8
# Classifier: the whole volume resized to this shape (z, y, x).
CLS_DIMS = (48, 96, 96)

LOBE_LABELS = ["background", "RUL", "RML", "RLL", "LUL", "LLL"]
OPACITY_LABELS = ["background", "ground_glass", "consolidation"]
# Training seeds; evaluation uses seeds from EVAL_SEED_BASE on, which training never sees.
TRAIN_SEEDS = range(1000, 1100)
EVAL_SEED_BASE = 900000
