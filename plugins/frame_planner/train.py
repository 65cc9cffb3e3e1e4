"""``agentd train-planner``: fine-tune MiniLM's top layers and a token-label head on the corpus.

What is trained, and why (measured in ``docs/planner_trained.md``):

* the base is all-MiniLM-L6-v2 (the daemon's default encoder): it knows English
  that a model trained here from scratch would not, and it is already on the
  device, so the planner ships as an *adapter* — only the fine-tuned ``layers``
  transformer blocks and the classifier (float16 at rest: 21 MB for all six);
* the word embeddings (half of MiniLM) and any blocks below ``layers`` stay
  frozen, so their outputs are computed once for the whole corpus and each epoch
  runs only the trained blocks: minutes on two cores;
* the head tags each token ``B-``/``I-``/``O`` of the labels in :mod:`.labels`.

Torch is needed here (training), not where the planner runs.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .labels import LABEL_IDS, TOKEN_LABELS, is_intent

#: Labels the loss ignores (special tokens, padding).
IGNORE = -100


@dataclass(frozen=True)
class TrainingOptions:
    """Everything that decides the trained model (recorded in the adapter's ``training.json``)."""

    #: Transformer blocks fine-tuned, counted from the top (0: frozen encoder, head only).
    layers: int = 6
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    head_learning_rate: float = 2e-3
    dropout: float = 0.1
    seed: int = 0
    #: Stop early (after a whole batch) once training has run this long.
    max_minutes: float = 60.0
    #: Augmented copies per request (argument values and filler words swapped for random words).
    augment: int = 1
    #: How the adapter stores its tensors: float16 halves the file (logits move by ~1e-3, labels do not).
    storage: str = "float16"


@dataclass
class TrainingReport:
    """What a training run did: the loss curve and the time it took."""

    options: TrainingOptions
    examples: int
    seconds: float = 0.0
    feature_seconds: float = 0.0
    #: (fraction of training done, loss) per batch.
    losses: list[tuple[float, float]] = field(default_factory=list)
    #: Token accuracy on the development slice after each epoch.
    dev_token_accuracy: list[float] = field(default_factory=list)
    trainable_parameters: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "options": dict(self.options.__dict__), "examples": self.examples, "seconds": round(self.seconds, 1),
            "feature_seconds": round(self.feature_seconds, 1), "trainable_parameters": self.trainable_parameters,
            "dev_token_accuracy": self.dev_token_accuracy,
            "losses": [[round(step, 4), round(loss, 5)] for step, loss in self.losses],
        }


def clause_ranges(text: str, spans: Sequence[dict[str, Any]]) -> list[tuple[int, int, str]]:
    """``(start, end, intent label)`` of each clause, from the corpus's trigger and role spans.

    A clause runs from its trigger (the first one: from the start of the request)
    to the end of the last span before the next trigger (the last one: to the end);
    the words between two clauses ("and then", "if") belong to neither.
    """
    ordered = sorted(spans, key=lambda s: s["start"])
    triggers = [s for s in ordered if is_intent(s["label"])]
    ranges = []
    for index, trigger in enumerate(triggers):
        start = 0 if index == 0 else trigger["start"]
        if index + 1 < len(triggers):
            following = triggers[index + 1]["start"]
            end = max(s["end"] for s in ordered if s["start"] < following)
        else:
            end = len(text)
        ranges.append((start, end, trigger["label"]))
    return ranges


def token_labels(text: str, offsets: Sequence[tuple[int, int]], spans: Sequence[dict[str, Any]]) -> list[int]:
    """Label ids for tokens with character ``offsets``: roles BIO, clause words their intent,
    joining words ``O``, special tokens :data:`IGNORE`."""
    roles = [s for s in spans if not is_intent(s["label"])]
    clauses = clause_ranges(text, spans)
    labels: list[int] = []
    previous: dict[str, Any] | None = None
    for start, end in offsets:
        if start == end:
            labels.append(IGNORE)
            continue
        role = next((s for s in roles if s["start"] <= start and end <= s["end"]), None)
        if role is not None:
            labels.append(LABEL_IDS[("I-" if role is previous else "B-") + role["label"]])
        else:
            clause = next((c for c in clauses if c[0] <= start and end <= c[1]), None)
            labels.append(LABEL_IDS[clause[2] if clause is not None else "O"])
        previous = role
    return labels


#: Roles whose words are free text or names: what augmentation may swap for random words.
TEXT_ROLES = frozenset({"origin", "place", "near", "cuisine", "dish", "item", "person", "memo", "payee", "title",
                        "location", "message", "query", "category", "fact_city", "fact_diet"})


def vocabulary_words(tokenizer: Any) -> list[str]:
    """Whole alphabetic words of the encoder's vocabulary (no word pieces, no specials)."""
    return sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) >= 3)


def augment(example: dict[str, Any], rng: random.Random, words: Sequence[str]) -> dict[str, Any]:
    """A copy of ``example`` whose text-role values are random words half the time, and with a random
    word slipped in between spans now and then: the tagger must read the context ("to X", "near X",
    "tell X that ..."), not remember which city or dish the corpus used."""
    pieces: list[tuple[str, str | None]] = []  # (text, span label or None)
    cursor = 0
    for span in sorted(example["spans"], key=lambda s: s["start"]):
        gap = example["request"][cursor : span["start"]]
        if gap.strip() and rng.random() < 0.15:
            cut = rng.choice([i for i, ch in enumerate(gap) if ch == " "] or [len(gap)])
            gap = gap[:cut] + " " + rng.choice(words) + gap[cut:]
        pieces.append((gap, None))
        value = example["request"][span["start"] : span["end"]]
        if span["label"] in TEXT_ROLES and rng.random() < 0.5:
            value = " ".join(rng.choice(words) for _ in range(rng.choice((1, 1, 2, 2, 3))))
            if rng.random() < 0.5:
                value = value.title()
        pieces.append((value, span["label"]))
        cursor = span["end"]
    pieces.append((example["request"][cursor:], None))
    text, spans = "", []
    for piece, label in pieces:
        if label is not None:
            spans.append({"start": len(text), "end": len(text) + len(piece), "label": label})
        text += piece
    return {**example, "request": text, "spans": spans, "augmented": True}


class TaggerModel:
    """MiniLM split in two: frozen lower blocks (features, computed once) and the trained top."""

    def __init__(self, base_dir: Path, layers: int, dropout: float):
        import torch
        from torch import nn

        from agentd.formats import open_checkpoint
        from agentd.plugins.transformer.bert import load

        checkpoint = open_checkpoint(base_dir)
        backend = load(checkpoint)
        self.base_config = dict(checkpoint.config)
        self.tokenizer = checkpoint.tokenizer().backend
        self.encoder = backend.encoder
        total = self.encoder.config.num_hidden_layers
        if not 0 <= layers <= total:
            raise ValueError(f"layers must be in 0..{total}")
        self.frozen_layers = total - layers
        for layer in self.encoder.layers[self.frozen_layers :]:
            layer.requires_grad_(True)
        self.classifier = nn.Linear(self.encoder.config.hidden_size, len(TOKEN_LABELS))
        self.dropout = nn.Dropout(dropout)
        self.torch = torch

    def trainable(self) -> list[Any]:
        return [p for layer in self.encoder.layers[self.frozen_layers :] for p in layer.parameters()]

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoding = self.tokenizer.encode(text)
        return list(encoding.ids), [tuple(o) for o in encoding.offsets]

    def features(self, id_lists: Sequence[Sequence[int]], batch_size: int = 64) -> list[Any]:
        """The frozen blocks' output (T, C) for each token id list."""
        torch = self.torch
        out: list[Any] = [None] * len(id_lists)
        order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
        encoder = self.encoder
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                ids, mask = _pad([id_lists[i] for i in chunk], torch)
                x = encoder.run_layers(encoder.embed(ids), mask, encoder.layers[: self.frozen_layers])
                for row, index in enumerate(chunk):
                    out[index] = x[row, : len(id_lists[index])].clone()
        return out

    def logits(self, features: Sequence[Any], train: bool) -> tuple[Any, Any]:
        """Label logits (B, T, L) of padded ``features``, and the padding mask (B, T)."""
        torch = self.torch
        longest = max(f.shape[0] for f in features)
        x = torch.zeros((len(features), longest, features[0].shape[1]))
        mask = torch.zeros((len(features), longest), dtype=torch.bool)
        for row, f in enumerate(features):
            x[row, : f.shape[0]] = f
            mask[row, : f.shape[0]] = True
        x = self.encoder.run_layers(x, mask, self.encoder.layers[self.frozen_layers :])
        if train:
            x = self.dropout(x)
        return self.classifier(x), mask

    def adapter_tensors(self, storage: str = "float32") -> dict[str, np.ndarray]:
        """The trained tensors under their Hugging Face ``BertForTokenClassification`` names, as ``storage``."""
        return {name: array.astype(storage) for name, array in self._adapter_tensors().items()}

    def _adapter_tensors(self) -> dict[str, np.ndarray]:
        tensors: dict[str, np.ndarray] = {}
        for index in range(self.frozen_layers, self.encoder.config.num_hidden_layers):
            layer = self.encoder.layers[index]
            prefix = f"bert.encoder.layer.{index}."
            for kind in ("weight", "bias"):
                fused = getattr(layer.qkv, kind).detach().numpy()
                for part, name in zip(np.split(fused, 3, axis=0), ("query", "key", "value")):
                    tensors[f"{prefix}attention.self.{name}.{kind}"] = np.ascontiguousarray(part)
                for module, name in ((layer.attention_out, "attention.output.dense"),
                                     (layer.attention_norm, "attention.output.LayerNorm"),
                                     (layer.intermediate, "intermediate.dense"),
                                     (layer.output, "output.dense"),
                                     (layer.output_norm, "output.LayerNorm")):
                    tensors[f"{prefix}{name}.{kind}"] = getattr(module, kind).detach().numpy().copy()
        tensors["classifier.weight"] = self.classifier.weight.detach().numpy().copy()
        tensors["classifier.bias"] = self.classifier.bias.detach().numpy().copy()
        return tensors

    def config(self) -> dict[str, Any]:
        """The composed model's ``config.json``: the base's, as a token classifier with our labels."""
        config = dict(self.base_config)
        config["architectures"] = ["BertForTokenClassification"]
        config["id2label"] = {str(i): label for i, label in enumerate(TOKEN_LABELS)}
        config["label2id"] = {label: i for i, label in enumerate(TOKEN_LABELS)}
        return config


def _pad(id_lists: Sequence[Sequence[int]], torch: Any) -> tuple[Any, Any]:
    longest = max(len(ids) for ids in id_lists)
    ids = torch.zeros((len(id_lists), longest), dtype=torch.long)
    mask = torch.zeros((len(id_lists), longest), dtype=torch.bool)
    for row, values in enumerate(id_lists):
        ids[row, : len(values)] = torch.tensor(list(values))
        mask[row, : len(values)] = True
    return ids, mask


def train(
    examples: Sequence[dict[str, Any]],
    base_dir: Path,
    options: TrainingOptions,
    *,
    progress: Callable[[str], None] = print,
) -> tuple[TaggerModel, TrainingReport]:
    """Train a tagger on corpus ``examples`` (the design doc's JSONL records)."""
    import torch

    torch.manual_seed(options.seed)
    rng = random.Random(options.seed)
    started = time.perf_counter()
    model = TaggerModel(base_dir, options.layers, options.dropout)
    words = vocabulary_words(model.tokenizer)
    examples = list(examples) + [augment(e, rng, words) for _ in range(options.augment) for e in examples]
    encoded = [model.encode(example["request"]) for example in examples]
    targets = [torch.tensor(token_labels(example["request"], offsets, example["spans"]))
               for (_, offsets), example in zip(encoded, examples)]
    features = model.features([ids for ids, _ in encoded])
    report = TrainingReport(options, len(examples))
    report.feature_seconds = time.perf_counter() - started
    progress(f"features of {len(examples)} requests in {report.feature_seconds:.0f} s")

    indices = list(range(len(examples)))
    rng.shuffle(indices)
    dev_size = min(max(len(indices) // 20, 1), 300) if len(indices) > 20 else 0
    dev, train_indices = indices[:dev_size], indices[dev_size:]

    parameters = [{"params": model.trainable(), "lr": options.learning_rate},
                  {"params": list(model.classifier.parameters()), "lr": options.head_learning_rate}]
    report.trainable_parameters = sum(p.numel() for group in parameters for p in group["params"])
    optimiser = torch.optim.AdamW(parameters, weight_decay=0.01)
    batches_per_epoch = math.ceil(len(train_indices) / options.batch_size)
    total = batches_per_epoch * options.epochs
    warmup = max(total // 20, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(total - warmup, 1))))
    loss_function = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    deadline = started + options.max_minutes * 60
    step = 0
    for epoch in range(options.epochs):
        # Batches of similar length: little padding, so little wasted compute.
        rng.shuffle(train_indices)
        chunks = [sorted(train_indices[i : i + options.batch_size * 8], key=lambda j: features[j].shape[0])
                  for i in range(0, len(train_indices), options.batch_size * 8)]
        batches = [chunk[i : i + options.batch_size] for chunk in chunks for i in range(0, len(chunk), options.batch_size)]
        rng.shuffle(batches)
        for layer in model.encoder.layers[model.frozen_layers :]:
            layer.train()
        for batch in batches:
            logits, mask = model.logits([features[i] for i in batch], train=True)
            target = torch.full(mask.shape, IGNORE, dtype=torch.long)
            for row, index in enumerate(batch):
                target[row, : len(targets[index])] = targets[index]
            loss = loss_function(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in parameters for p in g["params"]], 1.0)
            optimiser.step()
            schedule.step()
            step += 1
            report.losses.append((step / total, loss.item()))
            if step % 50 == 0:
                progress(f"epoch {epoch + 1}/{options.epochs} batch {step}/{total} loss {loss.item():.4f}")
            if time.perf_counter() > deadline:
                break
        accuracy = _token_accuracy(model, [features[i] for i in dev], [targets[i] for i in dev]) if dev else float("nan")
        report.dev_token_accuracy.append(round(accuracy, 5))
        progress(f"epoch {epoch + 1}: dev token accuracy {accuracy:.4f}")
        if time.perf_counter() > deadline:
            progress(f"stopped after {options.max_minutes} minutes")
            break
    for layer in model.encoder.layers:
        layer.eval()
    report.seconds = time.perf_counter() - started
    return model, report


def _token_accuracy(model: TaggerModel, features: Sequence[Any], targets: Sequence[Any]) -> float:
    torch = model.torch
    right = total = 0
    with torch.inference_mode():
        for start in range(0, len(features), 64):
            logits, _ = model.logits(features[start : start + 64], train=False)
            for row, target in enumerate(targets[start : start + 64]):
                predicted = logits[row, : len(target)].argmax(-1)
                keep = target != IGNORE
                right += int((predicted[keep] == target[keep]).sum())
                total += int(keep.sum())
    return right / max(total, 1)


def save(model: TaggerModel, report: TrainingReport, out_dir: Path, *, base_model: str) -> Path:
    """Write the adapter (atomically), then its training record beside it."""
    from agentd.plugins.adapter import write_adapter

    written = write_adapter(Path(out_dir), base_model=base_model, config=model.config(), tensors=model.adapter_tensors(report.options.storage))
    record = written / "training.json"
    tmp = record.with_name(".training.json.tmp")
    tmp.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    tmp.replace(record)
    return written


def plot_losses(report: TrainingReport, path: Path) -> bool:
    """The loss curve as a PNG (False if matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = [s for s, _ in report.losses]
    losses = [l for _, l in report.losses]
    window = max(len(losses) // 50, 1)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=120)
    axis.plot(steps, losses, alpha=0.3, label="batch loss")
    axis.plot(steps[window - 1 :], smooth, label=f"mean of {window}")
    axis.set_yscale("log")
    axis.set_xlabel(f"fraction of training ({report.options.epochs} epochs, {report.examples} requests)")
    axis.set_ylabel("token cross-entropy")
    axis.set_title(f"planner tagger: top {report.options.layers} MiniLM blocks + head, {report.seconds / 60:.1f} min")
    axis.legend()
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    figure.savefig(tmp, format="png")
    plt.close(figure)
    tmp.replace(path)
    return True
