"""Tiny ONNX models (onnx.helper, no training) and their manifests, to prove pulmo's inference
machinery. Usage: make_models.py OUT_DIR. Writes, each with a manifest named <model>.toml:

- threshold.onnx: 2 classes, class 1 where the scaled CT is above T (softmax of ±K·(x − T)).
- conv.onnx: a fixed, seeded 3×3×3 convolution to 3 classes (receptive radius 1 voxel).
- classifier.onnx: COVID-19 logit from the mean of the opacity channel.
- lobes_threshold.onnx: lungs (HU below −400) all labelled RUL: a stand-in lobes model.
- lung_gate.onnx: inputs CT and lung mask, class 1 exactly where the lung channel is 1 (proves
  that pulmo hands the lung mask to the model in the right channel, place and padding).
"""
import hashlib
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
OPSET = [helper.make_opsetid("", 17)]


def const(name, array):
    return helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.flatten().tolist())


def seg_io(rank):
    dims = ["N", 1] + ["Z", "Y", "X"][3 - (rank - 2):]
    x = helper.make_tensor_value_info("ct", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "K"] + dims[2:])
    return x, y


def threshold_model(t, k, rank, channels=2):
    x, y = seg_io(rank)
    nodes = [
        helper.make_node("Sub", ["ct", "t"], ["d"]),
        helper.make_node("Mul", ["d", "k"], ["pos"]),
        helper.make_node("Neg", ["pos"], ["neg"]),
        helper.make_node("Concat", ["neg", "pos"], ["logits"], axis=1),
    ]
    init = [const("t", np.array(t, dtype=np.float32)), const("k", np.array(k, dtype=np.float32))]
    graph = helper.make_graph(nodes, "threshold", [x], [y], init)
    return helper.make_model(graph, opset_imports=OPSET, ir_version=9)


def lung_gate_model():
    x = helper.make_tensor_value_info("ct", TensorProto.FLOAT, ["N", 2, "Z", "Y", "X"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2, "Z", "Y", "X"])
    nodes = [
        helper.make_node("Slice", ["ct", "one", "two", "one"], ["lung"]),
        helper.make_node("Sub", ["lung", "half"], ["d"]),
        helper.make_node("Mul", ["d", "k"], ["pos"]),
        helper.make_node("Neg", ["pos"], ["neg"]),
        helper.make_node("Concat", ["neg", "pos"], ["logits"], axis=1),
    ]
    ints = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("one", 1), ("two", 2))]
    init = ints + [const("half", np.array(0.5, dtype=np.float32)), const("k", np.array(50.0, dtype=np.float32))]
    graph = helper.make_graph(nodes, "lung_gate", [x], [y], init)
    return helper.make_model(graph, opset_imports=OPSET, ir_version=9)


def conv_model():
    x, y = seg_io(5)
    rng = np.random.default_rng(1234)
    w = rng.normal(0, 1, (3, 1, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, (3,)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["ct", "w", "b"], ["logits"], pads=[1] * 6)]
    graph = helper.make_graph(nodes, "conv", [x], [y], [const("w", w), const("b", b)])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=9)


def classifier_model():
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, "Z", "Y", "X"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])
    w = np.array([[0.0, 0.0], [0.0, 400.0]], dtype=np.float32)
    b = np.array([0.0, -2.0], dtype=np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[2, 3, 4], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["mw"]),
        helper.make_node("Add", ["mw", "b"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "classifier", [x], [y], [const("w", w), const("b", b)])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=9)


def manifest(name, role, task, sha, input_block, labels, activation="softmax", output="logits"):
    lab = "\n".join(f'"{k}" = "{v}"' for k, v in labels.items())
    return f'''name = "test-{name}"
version = "0.0.1"
role = "{role}"
task = "{task}"
file = "{name}.onnx"
sha256 = "{sha}"
licence = "Apache-2.0"
training_data = "none: built with onnx.helper by tests/py/make_models.py"

[input]
{input_block}

[output]
name = "{output}"
activation = "{activation}"

[output.labels]
{lab}
'''


def emit(sub, name, model, role, task, input_block, labels, activation="softmax"):
    d = out / sub
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.onnx"
    onnx.checker.check_model(model)
    onnx.save(model, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    (d / f"{name}.toml").write_text(manifest(name, role, task, sha, input_block, labels, activation))


CT_WINDOW = "window = [-1000.0, 1000.0]"
# machinery/: threshold at 0 HU (the window maps 0 HU to 0.5), and the seeded convolution.
emit("machinery", "threshold", threshold_model(0.5, 200.0, 5), "opacities", "segmentation",
     f'name = "ct"\nlayout = "patch3d"\nspacing_mm = [2.0, 2.0, 2.0]\n{CT_WINDOW}\npatch = [16, 32, 32]\noverlap = 4\nbatch = 2',
     {"0": "background", "1": "ground_glass"})
emit("machinery", "conv", conv_model(), "lobes", "segmentation",
     f'name = "ct"\nlayout = "patch3d"\nspacing_mm = [1.0, 1.0, 1.0]\n{CT_WINDOW}\npatch = [16, 16, 16]\noverlap = 8',
     {"0": "background", "1": "RUL", "2": "LLL"})
emit("machinery", "lung_gate", lung_gate_model(), "opacities", "segmentation",
     f'name = "ct"\nlayout = "patch3d"\nspacing_mm = [1.0, 1.0, 1.0]\n{CT_WINDOW}\npatch = [16, 16, 16]\noverlap = 4\n'
     'channels = ["ct", "lung"]',
     {"0": "background", "1": "consolidation"})
emit("machinery", "classifier", classifier_model(), "covid", "classification",
     'name = "input"\nlayout = "whole3d"\nspacing_mm = [4.0, 4.0, 4.0]\nwindow = [-1000.0, 400.0]\npatch = [16, 32, 32]\nchannels = ["ct", "opacity"]',
     {"0": "other", "1": "covid"})

# set/: a complete model set for `pulmo analyze`: lungs below -400 HU as RUL (2D slices),
# opacities above -650 HU (window [-1000, 400] puts -400 at 0.4286 and -650 at 0.25), classifier.
emit("set", "lobes", threshold_model(0.4286, -200.0, 4), "lobes", "segmentation",
     'name = "ct"\nlayout = "slice2d"\nspacing_mm = [2.0, 2.0, 5.0]\nwindow = [-1000.0, 400.0]\nbatch = 8',
     {"0": "background", "1": "RUL"})
emit("set", "opacities", threshold_model(0.25, 200.0, 5), "opacities", "segmentation",
     'name = "ct"\nlayout = "patch3d"\nspacing_mm = [2.0, 2.0, 2.5]\nwindow = [-1000.0, 400.0]\npatch = [32, 64, 64]\noverlap = 8',
     {"0": "background", "1": "ground_glass"})
emit("set", "classifier", classifier_model(), "covid", "classification",
     'name = "input"\nlayout = "whole3d"\nspacing_mm = [4.0, 4.0, 4.0]\nwindow = [-1000.0, 400.0]\npatch = [16, 32, 32]\nchannels = ["ct", "opacity"]',
     {"0": "other", "1": "covid"})
print("ok")
