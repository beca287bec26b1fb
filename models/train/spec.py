"""What the three models take and give: shared by the data cache, training and export, and written
into each manifest, so that the grid a model trained on is the grid pulmo gives it."""

# Segmentation grid (x, y, z) in mm, about the lung-window, 1 × 1 × 2.5 mm of Jin et al. 2020
# coarsened in-plane to keep 2 CPU cores fast.
SEG_SPACING = (1.6, 1.6, 2.5)
# HU window of every model input, scaled to [0, 1].
WINDOW = (-1000.0, 400.0)
# Lobes: the whole chest at once on a coarse grid (x, y, z) mm, exactly twice the segmentation grid
# (patches of 180 mm could not tell left from right or upper from lower lobes; see README.md). The
# patch is the largest volume run as one piece; smaller volumes are padded with air only up to the
# next multiple of LOBES_MULTIPLE (the U-Net's 3 poolings), as in training, so that instance
# normalisation sees the same amount of air in both. Probabilities come back to the CT grid by
# trilinear interpolation: the model is trained on the fraction of each coarse voxel that each lobe
# fills, so its boundaries fall between voxels where the fractions cross.
LOBES_SPACING = (3.2, 3.2, 5.0)
LOBES_PATCH = (96, 160, 160)
LOBES_MULTIPLE = 8
# Where the lobes model is unsure whether a CT voxel is lung (background probability 0.2-0.8),
# pulmo lets the CT place the border (src/segment/border.rs): aerated voxels (-960 to -400 HU) join
# the most probable lobe, dense ones (above -250 HU: chest wall, diaphragm; ground glass stays)
# leave the lung unless dense lung the model is sure of lies within 8 in-plane voxels
# (consolidation reaching the pleura, whose border the CT does not show). Chosen on 14 tuning
# phantoms (seeds 800000-800013); see README.md.
LOBES_BORDER = {"unsure": [0.2, 0.8], "lung_below_hu": -400.0, "air_below_hu": -960.0,
                "wall_above_hu": -250.0, "dense_reach_voxels": 8}
# Lobes 1.7.0 dropped three rules that changed nothing on real chest CT (bench/real_ct.py, 2026-12-07;
# README.md "Every manifest rule re-measured on real CT"): the thin-slice fissure watershed
# (`fissures`, lobes 1.4.0; forced onto the 2-2.5 mm real cases it made lobe borders ragged), the
# consolidated lobe (`consolidated_lobe`, 1.2.0-1.3.0) and, for opacities 1.7.0, the solid lesions
# (`solid_lesions`, 1.5.0; not one voxel changed on lidc-idri-0001's nodules).
# After the opacity rules each fissure as one smooth surface (src/segment/fissure_surface.rs): the model's border as a
# height field, smoothed by a local plane fit (Gaussian weights of 40 mm), shifted by the plane
# (up to 6 mm) that lies on the strongest ridge of
# the CT (its density against the CT one slice, at least 2 mm, above and below),
# and the lobe voxels within 15 mm of it take its side
# (lobes 1.5.0; chosen on the 16 small and 8 full-size tuning phantoms of 800000-800049; see
# README.md, "The fissure as a surface"). After the plane, each column of an oblique fissure moves
# up to 5 mm more, to the strongest ridge of the columns around it (pooled with Gaussian weights of
# 15 mm), which follows a bend of the model's border that no plane fits; the horizontal fissure's
# ridge leaves out voxels denser than -500 HU (vessels run in its plane at the hilum's level) and
# is not refined (lobes 1.6.0; chosen on the 16 small tuning phantoms and 25 small ones of
# 820000-820049; see README.md, "The fissure as a surface, refined").
LOBES_FISSURE_SURFACE = {"smooth_mm": 40.0, "search_mm": 6.0, "band_mm": 15.0,
                         "hu_range": [-1000.0, -500.0], "refine_mm": 5.0, "refine_smooth_mm": 15.0,
                         "horizontal_skips_dense": True}
# Patch (z, y, x) the opacities model trains and runs on, with the overlap pulmo blends.
OPACITIES_PATCH = (32, 96, 96)
SEG_OVERLAP = 8
# pulmo drops opacity components in which no ball of this radius (in-plane CT voxels) fits: the
# model's false positives are thin and vessel-like. Chosen on 28 tuning phantoms (seeds 800000 on,
# neither training nor evaluation seeds) with misses.py; see README.md.
OPACITIES_MIN_RADIUS_VOXELS = 2.5
# Then pulmo carries the opacities out to the edge the CT shows (src/infer/opacity_edge.rs): lung
# at least as dense as -700 HU (ground glass) within 1.6 mm in the slice of a found opacity (one
# model voxel; two pixels of a 0.7 mm CT, none of a 2.8 mm one) joins it. The model's opacities
# stop short of the lesions' edges by about that much. Chosen on the 14 tuning phantoms (seeds
# 800000-800013) and checked on 28; see README.md.
OPACITIES_EDGE = {"dense_above_hu": -700.0, "reach_mm": 1.6}
# Last, pulmo drops small findings that are a vessel (src/infer/vessel_opacities.rs): no ball of
# 8 mm radius fits in them and at least 5 % of their voxels belong to dense lung (above -300 HU)
# that lies mostly outside them, a vessel going on beyond the finding. Chosen on the 28 tuning
# phantoms (seeds 800000-800027); see README.md. Except ground glass of its own that a vessel runs
# through: at least half of the finding is lung at or below -300 HU, and that lung's interquartile
# range is at most 150 HU (a vessel's halo falls off from the vessel to the lung: 214 HU and more on
# the tuning phantoms; true lesions 41-93 HU). Chosen on 32 tuning phantoms (seeds 800000-800027,
# 800028, 800035, 800042, 800049); see README.md.
OPACITIES_VESSELS = {"dense_above_hu": -300.0, "max_radius_mm": 8.0, "min_vessel_share": 0.05,
                     "max_ground_glass_iqr_hu": 150.0}
# Classifier: the whole volume resized to this shape (z, y, x).
CLS_DIMS = (48, 96, 96)

LOBE_LABELS = ["background", "RUL", "RML", "RLL", "LUL", "LLL"]
OPACITY_LABELS = ["background", "ground_glass", "consolidation"]
# Training seeds of the two segmentation models; evaluation uses seeds from EVAL_SEED_BASE on,
# which training never sees.
TRAIN_SEEDS = range(1000, 1100)
# The classifier's own studies, which the segmentation models never saw: their maps there have the
# errors the models make on a new patient (on their own training studies they are near perfect).
CLASSIFIER_SEEDS = range(1100, 1200)
EVAL_SEED_BASE = 900000
# choose_opacities.py picks among opacities candidates on phantoms from this seed on: not the
# held-out set, and not the 800000-800114 tuning phantoms the post-processing rules were chosen on.
SELECT_SEED_BASE = 830000
