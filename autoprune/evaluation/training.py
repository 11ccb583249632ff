"""Training, BatchNorm recalibration and measurement on in-memory data.

Shared by the dense model's first training, the evaluator's short retraining and the
final fine-tuning at export, so all three follow one recipe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autoprune.data.base import Split, TaskData
from autoprune.evaluation.outputs import auxiliary_loss, logits_of, split_output


@dataclass(frozen=True)
class TrainConfig:
    """SGD with Nesterov momentum and a warm-up then cosine learning-rate schedule.

    The cosine schedule reaching zero at the last step suits short budgets: a few
    hundred steps still end in a converged state.
    """

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    warmup_fraction: float = 0.05
    #: weight of the KL term to the dense model's predictions (0 disables distillation)
    distill_weight: float = 0.0
    distill_temperature: float = 4.0

    def __post_init__(self) -> None:
        for field_name in ("lr", "batch_size"):
            if getattr(self, field_name) <= 0:
                raise ValueError(f"{field_name} must be positive, got {getattr(self, field_name)}")
        if not 0 <= self.distill_weight <= 1:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}")


@dataclass(frozen=True)
class Placement:
    """Where and how tensors run: the device, bfloat16 autocast, channels-last memory format.

    Autocast and channels-last help convolutions on GPUs; on the CPU they are off.
    """

    device: str = "cpu"
    amp: bool = False
    channels_last: bool = False

    def batch(self, data: TaskData, x: torch.Tensor) -> torch.Tensor:
        batch = data.normalize(x).to(self.device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch

    def autocast(self) -> torch.autocast:
        return torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.amp)

    def place(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


CPU = Placement()


def resolve_placement(device: str = "auto", *, amp: bool | None = None, channels_last: bool | None = None) -> Placement:
    """``auto`` picks CUDA when present, otherwise the CPU; amp and channels-last default to
    on for CUDA and off elsewhere."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but CUDA is not available here")
    on_gpu = device.startswith("cuda")
    return Placement(device=device, amp=on_gpu if amp is None else amp and on_gpu,
                     channels_last=on_gpu if channels_last is None else channels_last)


@dataclass(frozen=True)
class TrainOutcome:
    steps: int
    samples: int
    final_loss: float
    diverged: bool


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    warmup = max(1, int(config.warmup_fraction * total))
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * progress))


def sgd(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """The optimiser of every retraining: SGD with Nesterov momentum and weight decay."""
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True,
                           weight_decay=config.weight_decay)


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """The training-sample indices of each of ``steps`` mini-batches: epochs of a seeded
    shuffle, a new one whenever the rest of the current one cannot fill a batch."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    cursor = 0
    for _ in range(steps):
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        yield order[cursor: cursor + batch_size]
        cursor += batch_size


def train(
    model: nn.Module,
    data: TaskData,
    *,
    steps: int,
    config: TrainConfig,
    seed: int,
    teacher: "nn.Module | TeacherCache | None" = None,
    placement: Placement = CPU,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainOutcome:
    """Train ``model`` for ``steps`` mini-batches of ``data.train``; stop early on NaN/inf loss.

    A model returning auxiliary logits in training mode (GoogLeNet, Inception v3) trains
    them too, weighted as :mod:`autoprune.evaluation.outputs` says.

    With a ``teacher`` (a model, or a :class:`TeacherCache` of one), the loss mixes
    cross-entropy with the KL divergence to the teacher's softened predictions
    (``distill_weight``, ``distill_temperature``). ``on_step(steps_done, loss)`` is called
    after every step, so long trainings can report progress."""
    if isinstance(teacher, TeacherCache) and len(teacher.logits) != len(data.train):
        raise ValueError(f"the teacher cache has {len(teacher.logits)} rows for {len(data.train)} training samples")
    distilling = config.distill_weight > 0 and teacher is not None
    if steps <= 0:
        return TrainOutcome(steps=0, samples=0, final_loss=float("nan"), diverged=False)
    optimizer = sgd(model, config)
    model.train()
    loss_value = float("nan")
    samples = 0
    for step, idx in enumerate(batch_indices(len(data.train), config.batch_size, steps, seed)):
        x = placement.batch(data, data.train.x[idx])
        y = data.train.y[idx].to(placement.device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, config)
        with placement.autocast():
            logits, auxiliary = split_output(model(x))
            logits = logits.float()
            target = None
            if isinstance(teacher, TeacherCache) and distilling:
                target = teacher.targets(idx, x)
            elif distilling:
                with torch.no_grad():
                    target = logits_of(teacher(x)).float()
        loss = distillation_loss(logits, y, target, weight=config.distill_weight,
                                 temperature=config.distill_temperature) + auxiliary_loss(auxiliary, y)
        loss_value = float(loss.detach())
        samples += len(idx)
        if not np.isfinite(loss_value):
            return TrainOutcome(steps=step + 1, samples=samples, final_loss=loss_value, diverged=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step + 1, loss_value)
    model.eval()
    return TrainOutcome(steps=steps, samples=samples, final_loss=loss_value, diverged=False)


class TeacherCache:
    """A distillation teacher that remembers its logits per training sample.

    Training batches are not augmented and the teacher is frozen in eval mode, so its
    logits are fixed per sample: each is computed the first time a batch holds it and read
    back afterwards. Candidates are retrained with the same seed (common random numbers),
    so they draw the same batches and, after the first, hardly run the dense teacher at
    all, while a pruned student is often a few percent of its FLOPs. Nothing is computed
    ahead: the cache never costs more teacher passes than plain distillation would.
    """

    def __init__(self, teacher: nn.Module, n_samples: int, num_classes: int) -> None:
        self.teacher = teacher.eval()
        self.logits = torch.zeros(n_samples, num_classes)
        self.known = torch.zeros(n_samples, dtype=torch.bool)
        self.computed = 0  # samples the teacher has been run on

    def targets(self, idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for training samples ``idx`` (whose inputs are ``x``), on ``x``'s device."""
        missing = ~self.known[idx]
        if bool(missing.any()):
            with torch.no_grad():
                fresh = logits_of(self.teacher(x[missing.to(x.device)])).float().cpu()
            self.logits[idx[missing]] = fresh
            self.known[idx[missing]] = True
            self.computed += int(missing.sum())
        return self.logits[idx].to(x.device)


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None, *,
                      weight: float, temperature: float) -> torch.Tensor:
    """``(1 - w) * CE(logits, labels) + w * T^2 * KL(teacher_T || student_T)`` (Hinton et al., 2015).

    The ``T^2`` factor keeps the gradient scale of the soft term independent of the
    temperature. Without teacher logits (or with ``w = 0``) it is plain cross-entropy.
    """
    loss = F.cross_entropy(logits, labels)
    if teacher_logits is None or weight == 0:
        return loss
    t = temperature
    kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1), log_target=True,
                  reduction="batchmean") * t * t
    return (1 - weight) * loss + weight * kl


def recalibrate_batchnorm(model: nn.Module, data: TaskData, *, batches: int, batch_size: int, seed: int,
                          placement: Placement = CPU) -> int:
    """Re-estimate BatchNorm running statistics on training batches (EagleEye's adaptive BN).

    Running stats are reset and accumulated as a cumulative average (momentum None), so
    the result is the plain mean over the batches seen. Returns the number of samples used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return 0
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.train), generator=generator)
    used = 0
    model.train()
    with torch.no_grad():
        for b in range(batches):
            idx = order[b * batch_size : (b + 1) * batch_size]
            if len(idx) == 0:
                break
            with placement.autocast():
                model(placement.batch(data, data.train.x[idx]))
            used += len(idx)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()
    return used


def measure(model: nn.Module, data: TaskData, split: Split, *, batch_size: int = 512) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``split``, in eval mode."""
    scores = score(model, data, split, batch_size=batch_size)
    return scores["accuracy"], scores["loss"]


def predict(model: nn.Module, data: TaskData, split: Split, *, limit: int | None = None,
            batch_size: int = 512, placement: Placement = CPU) -> torch.Tensor:
    """Logits of ``model`` for the first ``limit`` samples of ``split`` (all when None)."""
    model.eval()
    n = len(split) if limit is None else min(limit, len(split))
    outputs = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            with placement.autocast():
                batch = placement.batch(data, split.x[start : min(n, start + batch_size)])
                outputs.append(logits_of(model(batch)).float().cpu())
    return torch.cat(outputs)


def score(model: nn.Module, data: TaskData, split: Split, *, limit: int | None = None,
          reference: torch.Tensor | None = None, batch_size: int = 512, placement: Placement = CPU) -> dict[str, float]:
    """Accuracy and mean cross-entropy on the first ``limit`` samples of ``split``; with
    ``reference`` logits (the dense model's), also the mean KL divergence from the reference
    predictions to the model's, the output-distance fitness of Týr-the-Pruner, and the mean
    squared error of the logits (``mse_to_dense``) with its largest per-sample value
    (``worst_mse_to_dense``), the output distortions of the ``dp`` searcher's curves."""
    logits = predict(model, data, split, limit=limit, batch_size=batch_size, placement=placement)
    y = split.y[: len(logits)]
    result = {
        "accuracy": float((logits.argmax(dim=1) == y).float().mean()),
        "loss": float(F.cross_entropy(logits, y)),
        "eval_samples": len(logits),
    }
    if reference is not None:
        ref = reference[: len(logits)]
        result["kl_to_dense"] = float(F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(ref, dim=1),
                                               log_target=True, reduction="batchmean"))
        per_sample = (logits - ref).pow(2).mean(dim=1)
        result["mse_to_dense"] = float(per_sample.mean())
        result["worst_mse_to_dense"] = float(per_sample.max())
    return result
