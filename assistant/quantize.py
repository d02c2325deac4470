"""The reader in int8 for ONNX Runtime: activation ranges measured once, smoothed, then dynamic int8.

Why (issue 29, docs/design.md "Runtimes"): on CPUs with int8 dot products (VNNI, AMX) ONNX Runtime's int8
matrices read a window in about 60% of float32's or bf16's time, but plain dynamic int8 cost the reader 3.8 F1
on DuReader-robust. ONNX Runtime quantises a matrix's input per tensor, and a few input channels of this
encoder run a hundred times larger than the rest, so most channels are left with a few levels. Smoothing
(Xiao et al. 2023, SmoothQuant) divides each input channel by s_j = max|x_j|^alpha / max|w_j|^(1 - alpha) and
multiplies the matrix's column j by it, the same product in exact arithmetic, with the outliers moved into
weights that are quantised per output channel. Where one matrix still loses much (measured on calibration
windows by simulating int8 in torch), it stays float32.

`assistant quantize-reader --data FILES` (`training.measure_int8_ranges`) measures the ranges on windows of the
training files and writes `reader-int8.safetensors` next to the reader, tied to the reader file by its hash; the
int8 graph is derived from it on first use (assistant/onnx_runtime.py). A reader without a matching file reads in float32 or bf16.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

INT8_FILE = Path(__file__).resolve().parent / "models" / "reader-int8.safetensors"  # the committed reader's
ALPHA = 0.8  # the share of the outliers moved into the weights; 0.5 / 0.8 / 0.9 / 1.0 measured (docs/design.md)
# A matrix whose simulated int8 effect on the span logits exceeds this many times the median stays float32.
# Measured on reader v3 (2026-12-07): layer 4's second FFN matrix 8.4x the median, the next 5.9x; keeping that
# one float32 brought DuReader-robust from -0.7 to within 0.5 F1 of float32 (docs/design.md).
FLOAT_RATIO = 6.0


def file_hash(path: Path) -> str:
    stat = Path(path).stat()
    return _hash(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _hash(path: str, _size: int, _mtime: int) -> str:  # size and time: a rewritten file is hashed again
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def linears(model) -> dict:  # noqa: ANN001 - the torch reader network
    """The encoder's matrices by name (the span head's too); their inputs are what int8 quantises."""
    import torch

    named = {f"bert.{n}": m for n, m in model.bert.named_modules() if isinstance(m, torch.nn.Linear)}
    named.update({f"qa.{n}" if n else "qa": m for n, m in model.qa.named_modules() if isinstance(m, torch.nn.Linear)})
    return named


def activation_ranges(model, windows) -> dict:  # noqa: ANN001
    """max |x| per input channel of every matrix over `windows` (tokenizer windows: input_ids, attention_mask)."""
    import torch

    ranges, hooks = {}, []
    for name, module in linears(model).items():
        def hook(_module, inputs, _output, name=name):
            x = inputs[0].detach().float().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
            ranges[name] = torch.maximum(ranges[name], x) if name in ranges else x
        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for ids, mask in _each_window(windows):
                model(ids, mask)
    finally:
        for h in hooks:
            h.remove()
    return ranges


def _each_window(windows):  # noqa: ANN001, ANN202
    """Each window of tokenizer windows (input_ids, attention_mask) alone, at its own length, as the reader runs
    them: ONNX Runtime quantises a matrix's input over the whole call."""
    import torch

    for enc in windows:
        for w in range(len(enc["input_ids"])):
            n = int(enc["attention_mask"][w].sum())
            yield (torch.from_numpy(enc["input_ids"][w:w + 1, :n]).long(),
                   torch.from_numpy(enc["attention_mask"][w:w + 1, :n]).long())


def scales(weight, x_range, alpha: float = ALPHA):  # noqa: ANN001, ANN201 - torch tensors
    w_range = weight.detach().float().abs().amax(0).clamp(min=1e-5)
    return (x_range.clamp(min=1e-5) ** alpha / w_range ** (1 - alpha)).clamp(min=1e-5)


def simulated(x, weight, bias, s):  # noqa: ANN001, ANN201 - torch tensors
    """x @ W.T + b as int8 computes it: x / s quantised per tensor (uint8, asymmetric, as ONNX Runtime's dynamic
    quantisation does), W * s per output row (int8, symmetric)."""
    import torch

    x, w = x.float() / s, weight.float() * s
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    step = (hi - lo) / 255 or 1.0
    zero = round(-lo / step)
    xq = (torch.clamp(torch.round(x / step) + zero, 0, 255) - zero) * step
    w_step = (w.abs().amax(1, keepdim=True) / 127).clamp(min=1e-12)
    return xq @ (torch.round(w / w_step) * w_step).T + bias.float()


def kept_float(model, windows, ranges, alpha: float = ALPHA) -> tuple[list[str], dict]:  # noqa: ANN001
    """The matrices int8 would hurt most, and each one's effect: the mean change of the span logits when that
    matrix alone is simulated in int8, over `windows`; a matrix over FLOAT_RATIO times the median stays float32.
    (A matrix's own relative error does not find them: the one that moves the logits most has an ordinary one.)"""
    import torch

    def logits():
        out = []
        with torch.inference_mode():
            for ids, mask in _each_window(windows):
                out += model(ids, mask)
        return torch.cat([t.reshape(-1) for t in out])

    exact = logits()
    effects = {}
    for name, module in linears(model).items():
        s = scales(module.weight, ranges[name], alpha)
        hook = module.register_forward_hook(lambda m, args, _out, s=s: simulated(args[0], m.weight, m.bias, s))
        try:
            effects[name] = float((logits() - exact).abs().mean())
        finally:
            hook.remove()
    median = float(np.median(list(effects.values())))
    return sorted((n for n, e in effects.items() if e > FLOAT_RATIO * median), key=lambda n: -effects[n]), effects


def ranges_file(reader_path: Path) -> Path:
    """Where a reader file's ranges live: beside it, named after it (reader.safetensors -> reader-int8.safetensors)."""
    reader_path = Path(reader_path)
    return reader_path.with_name(f"{reader_path.stem}-int8.safetensors")


def matching(reader_path: Path) -> Path | None:
    """The reader file's ranges file when it was measured on this very reader file, else None (an unreadable file
    too: the reader then reads in float, as without it)."""
    from safetensors import SafetensorError, safe_open

    path = ranges_file(reader_path)
    if not path.is_file() or not Path(reader_path).is_file():
        return None
    try:
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
        return path if meta.get("reader_sha256") == file_hash(reader_path) else None
    except (OSError, SafetensorError):
        return None


def write_int8_graph(model, ranges_file: Path, path: Path, export, unsigned: bool = False) -> None:  # noqa: ANN001
    """Smooth `model`'s matrices by the measured ranges, export it with `export(model, float_path)`, and write
    its dynamic int8 form (per-channel int8 weights, or unsigned 8-bit ones with `unsigned`: ONNX Runtime's U8U8
    kernels) to `path`; the matrices kept float32 stay so."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from safetensors import safe_open

    with safe_open(str(ranges_file), "pt") as f:
        meta = f.metadata()
        ranges = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    alpha, floats = float(meta["alpha"]), set(json.loads(meta["float"]))
    float_weights = set()
    for name, module in linears(model).items():
        if name in floats:
            float_weights.add(_weight_key(module.weight.detach().float().T.contiguous().numpy()))
            continue
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr,
                _smoothed(module, scales(module.weight, ranges[name], alpha)))
    float_path, tmp = path.with_name(f".tmp-float-{path.name}"), path.with_name(f".tmp-{path.name}")
    try:
        export(model, float_path)
        graph = onnx.load(str(float_path))
        weights = {i.name: i for i in graph.graph.initializer}
        matmuls = [n for n in graph.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
        nodes = [n.name for n in matmuls
                 if _weight_key(onnx.numpy_helper.to_array(weights[n.input[1]])) not in float_weights]
        if len(matmuls) - len(nodes) != len(floats):  # the export stored a kept matrix otherwise: do not guess
            raise RuntimeError(f"int8 graph: {len(matmuls) - len(nodes)} of the {len(floats)} matrices to keep "
                               "float32 were found in the exported graph")
        quantize_dynamic(str(float_path), str(tmp), per_channel=True,
                         weight_type=QuantType.QUInt8 if unsigned else QuantType.QInt8,
                         nodes_to_quantize=nodes)
        tmp.replace(path)
    finally:
        float_path.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def _weight_key(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _smoothed(linear, s):  # noqa: ANN001, ANN202 - a torch module
    """x @ W.T + b as (x / s) @ (W * s).T + b: the same product, its input's outliers moved into the weights."""
    import torch

    class Smoothed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inverse = torch.nn.Parameter((1.0 / s).float(), requires_grad=False)
            self.linear = torch.nn.Linear(linear.in_features, linear.out_features)
            self.linear.weight = torch.nn.Parameter(linear.weight.detach().float() * s[None, :], requires_grad=False)
            self.linear.bias = torch.nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)

        def forward(self, x):  # noqa: ANN001, ANN202
            return self.linear(x * self.inverse)

    return Smoothed()
