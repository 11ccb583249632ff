"""Score one pruned language model: build, distil briefly from the dense model, measure.

The language-model counterpart of :class:`autoprune.evaluation.evaluator.Evaluator`, with
the same ``run(levels, fidelity=, seed=, eval_samples=, init_state=, init_levels=) -> Evaluated``
interface and the same failures (:class:`EvaluationFailed`), so every searcher and
executor drives it unchanged. What differs is what quality means:

- ``kl_to_dense``: the mean, over held-out next-token positions, of the KL divergence from
  the dense model's next-token distribution to the candidate's (Týr-the-Pruner's and
  DarwinLM's fitness). The dense side is computed once per held-out batch, when a
  candidate is first scored on it, so a search on a few held-out sequences never pays
  for the dense model on all of them. With ``kl_top_k`` it keeps only
  the dense model's k most likely tokens per position and lumps the rest of the
  vocabulary into one "other" outcome, so the KL is exact for that coarser (k + 1)-way
  distribution and never more than the full one; this is what keeps the cache small
  for a 49 k-token vocabulary.
- ``loss`` (held-out cross-entropy, nats per token) and ``perplexity = exp(loss)``.

The front of a language-model search minimises :data:`QUALITY_METRIC` (perplexity);
searchers rank candidates by :data:`FITNESS_METRIC` (``kl_to_dense``), as the papers do.

Retraining (``fidelity`` steps) is distillation to the dense model on training sequences:
the same KL on logits, optionally mixed with the language-model loss, AdamW with a linear
warm-up and cosine decay, gradients clipped. PERP (Zimmer et al.) trains only norms and
biases, a small fraction of the weights, which recovers much of the pruning loss at a
fraction of the cost. Every candidate trains on the same batches for a given seed
(common random numbers), so the dense model's targets per training sequence are kept
(:class:`TrainTargets`, up to ``teacher_cache_mb``) and later candidates do not run the
dense model on them again; what does not fit is computed each time, as without a cache.

Latency is measured on the built model: ``latency_ms`` for one prefill of
``(latency_batch_size, latency_seq_len)`` tokens, ``decode_ms_per_token`` for each further
token generated with the key/value cache.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autoprune.errors import UserError
from autoprune.evaluation.evaluator import MEASUREMENT_TRAININGS, Evaluated, EvaluationFailed
from autoprune.evaluation.features import FeatureDistortion
from autoprune.llm.loading import max_context
from autoprune.llm.text_data import TokenData

logger = logging.getLogger(__name__)

#: the metric on a language model's front (lower is better)
QUALITY_METRIC = "perplexity"
#: whether the front wants the quality metric low ("min") or high ("max")
QUALITY_GOAL = "min"
#: what searchers rank language-model candidates by (lower is better)
FITNESS_METRIC = "kl_to_dense"

#: the most dense log-probabilities (held-out positions x vocabulary) kept in full: 800 MB of
#: float32; beyond it the held-out KL keeps the dense top-k (``DEFAULT_TOP_K``) unless told
MAX_CACHED_LOGPROBS = 200_000_000
DEFAULT_TOP_K = 64

#: builds the pruned model of ``levels``: a new model (the evaluator trains it) and its kept indices
Builder = Callable[[np.ndarray], tuple[nn.Module, dict[str, list[int]]]]


@dataclass(frozen=True)
class LMEvaluatorConfig:
    """How a language-model candidate is retrained and scored."""

    fidelity: int = 100
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 4
    warmup_fraction: float = 0.1
    #: share of the language-model loss in the retraining loss: ``(1 - w) * KL + w * CE``
    lm_weight: float = 0.0
    #: PERP: train only normalisation weights and biases
    train_norms_and_biases_only: bool = False
    max_grad_norm: float = 1.0
    #: None: the full distribution when it fits ``MAX_CACHED_LOGPROBS``, else ``DEFAULT_TOP_K``
    kl_top_k: int | None = None
    eval_batch_size: int = 8
    measure_latency: bool = True
    latency_batch_size: int = 1
    #: tokens of the timed prefill (and the prompt before decoding); None: the data's seq_len
    latency_seq_len: int | None = None
    decode_tokens: int = 16
    latency_repeats: int = 5
    #: "auto" (CUDA when present, else CPU), "cpu" or "cuda[:N]"
    device: str = "auto"
    #: memory for the dense model's distillation targets per training sequence (0: none kept)
    teacher_cache_mb: int = 1024
    #: also report ``feature_distortion:<boundary>`` at the end of every run of decoder blocks
    #: (:mod:`autoprune.llm.features`), for searchers that ask for it (``emo-pms``)
    feature_distortion: bool = False
    #: measure it only at the ends of this many runs of consecutive blocks, the ones the
    #: searcher reads (``StageSplit.merged``; None: at every block's end)
    feature_sub_networks: int | None = None
    #: how a searcher's measurements train their ``fidelity`` steps: ``task`` (distilled as
    #: trials are) or ``features`` (EMO-PMS's feature mimicking, which needs ``feature_distortion``)
    measurement_training: str = "task"

    def __post_init__(self) -> None:
        if self.fidelity < 0:
            raise ValueError(f"fidelity must be >= 0 retraining steps, got {self.fidelity}")
        for name in ("lr", "batch_size", "eval_batch_size", "latency_batch_size", "decode_tokens", "latency_repeats"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.lm_weight <= 1.0:
            raise ValueError(f"lm_weight must be in [0, 1], got {self.lm_weight}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.kl_top_k is not None and self.kl_top_k < 1:
            raise ValueError(f"kl_top_k must be None or >= 1, got {self.kl_top_k}")
        if self.latency_seq_len is not None and self.latency_seq_len < 1:
            raise ValueError(f"latency_seq_len must be None or >= 1, got {self.latency_seq_len}")
        if self.teacher_cache_mb < 0:
            raise ValueError(f"teacher_cache_mb must be >= 0, got {self.teacher_cache_mb}")
        if self.measurement_training not in MEASUREMENT_TRAININGS:
            raise ValueError(f"measurement_training must be one of {list(MEASUREMENT_TRAININGS)}, "
                             f"got {self.measurement_training!r}")
        if self.measurement_training == "features" and not self.feature_distortion:
            raise ValueError("measurement_training 'features' needs feature_distortion, which defines the features")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TopK:
    """The dense model's k most likely next tokens per position: their log-probabilities and ids."""

    logprobs: torch.Tensor
    indices: torch.Tensor


def token_kl(student_logits: torch.Tensor, target: torch.Tensor | TopK) -> torch.Tensor:
    """KL(dense || student) per position, for logits ``(..., V)``.

    ``target`` is the dense model's log-probabilities ``(..., V)``, or a :class:`TopK` of
    them, in which case the rest of the vocabulary counts as one outcome on both sides."""
    log_q = F.log_softmax(student_logits.float(), dim=-1)
    if isinstance(target, torch.Tensor):
        return (target.exp() * (target - log_q)).sum(dim=-1)
    log_q_top = log_q.gather(-1, target.indices)
    head = (target.logprobs.exp() * (target.logprobs - log_q_top)).sum(dim=-1)
    log_p_rest = _log1mexp(torch.logsumexp(target.logprobs, dim=-1))
    log_q_rest = _log1mexp(torch.logsumexp(log_q_top, dim=-1))
    return head + log_p_rest.exp() * (log_p_rest - log_q_rest)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, stable at both ends (Mächler, 2012)."""
    x = x.clamp(max=-1e-7)  # all the mass in the top-k: a vanishing rest, not log(0)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class TrainTargets:
    """The dense model's distillation targets per training sequence, kept while they fit.

    The teacher is frozen and training sequences are not augmented, so a sequence's
    target never changes; a batch whose sequences are all known costs no teacher pass.
    Sequences are kept in the order they are first met until ``max_bytes`` is used; a
    batch with any unknown sequence runs the teacher on the whole batch, as plain
    distillation would, so the cache never costs an extra pass."""

    def __init__(self, compute: Callable[[torch.Tensor], torch.Tensor | TopK], max_bytes: int) -> None:
        self.compute = compute
        self.max_bytes = max_bytes
        self.used = 0
        self.rows: dict[int, torch.Tensor | TopK] = {}
        self.teacher_sequences = 0  # sequences the teacher has been run on, for the record

    def __call__(self, indices: torch.Tensor, batch: torch.Tensor) -> torch.Tensor | TopK:
        """Targets of training sequences ``indices`` (whose tokens are ``batch``), on ``batch``'s device."""
        keys = [int(i) for i in indices]
        if all(k in self.rows for k in keys):
            rows = [self.rows[k] for k in keys]
            if isinstance(rows[0], TopK):
                return TopK(torch.stack([r.logprobs for r in rows]).to(batch.device),  # type: ignore[union-attr]
                            torch.stack([r.indices for r in rows]).to(batch.device))  # type: ignore[union-attr]
            return torch.stack(rows).to(batch.device)  # type: ignore[arg-type]
        target = self.compute(batch)
        self.teacher_sequences += len(keys)
        for row, key in enumerate(keys):
            if key in self.rows:
                continue
            # copies: a view of one row would keep the whole batch's tensor alive
            kept = (TopK(_row_copy(target.logprobs, row), _row_copy(target.indices, row))
                    if isinstance(target, TopK) else _row_copy(target, row))
            size = (kept.logprobs.nbytes + kept.indices.nbytes) if isinstance(kept, TopK) else kept.nbytes
            if self.used + size > self.max_bytes:
                break
            self.rows[key] = kept
            self.used += size
        return target


def _row_copy(tensor: torch.Tensor, row: int) -> torch.Tensor:
    return tensor[row].detach().to("cpu", copy=True)


def next_token_logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Logits predicting tokens ``1..T-1`` of each sequence from those before: ``(B, T-1, V)``."""
    return model(input_ids=tokens, use_cache=False).logits[:, :-1]


class LMEvaluator:
    """Holds the dense model, the text data and the dense targets once; scores a stream of candidates."""

    def __init__(
        self,
        *,
        dense: nn.Module,
        data: TokenData,
        build: Builder,
        config: LMEvaluatorConfig,
        cost: Callable[[np.ndarray, nn.Module], Mapping[str, float]] | None = None,
    ) -> None:
        """``cost(levels, model)`` adds metrics of each built model (e.g. its FLOPs and params) to its row."""
        self.dense = dense.eval()
        self.data = data
        self.build = build
        self.config = config
        self.cost = cost
        vocab = int(dense.get_output_embeddings().weight.shape[0])
        highest = int(max(int(getattr(data, s).max()) for s in ("train", "val", "test")))
        if highest >= vocab:
            raise UserError(f"the text data {data.name} holds token id {highest}, but the model's vocabulary has "
                            f"{vocab} entries; tokenise the text with this model's tokenizer.")
        context = max_context(dense.config)
        if context is not None and data.seq_len > context:
            raise UserError(f"--seq-len {data.seq_len} is beyond the model's context of {context} tokens; "
                            f"pass --seq-len {context} or less.")
        self.device = _resolve_device(config.device)
        self._teacher = copy.deepcopy(self.dense).to(self.device).eval() if self.device != "cpu" else self.dense
        positions = len(data.val) * (data.seq_len - 1)
        if config.kl_top_k is not None:
            self.top_k = min(config.kl_top_k, vocab)
        elif positions * vocab <= MAX_CACHED_LOGPROBS:
            self.top_k = 0
        else:
            self.top_k = min(DEFAULT_TOP_K, vocab)
            logger.info("held-out KL keeps the dense model's top %d tokens per position (%d positions x %d tokens "
                        "would not fit)", self.top_k, positions, vocab)
        self.params_dense = _count_params(self.dense)
        #: the dense model's targets per held-out batch, computed the first time a batch is scored
        self._val_targets: dict[int, torch.Tensor | TopK] = {}
        self._dense_metrics: dict[str, float] | None = None
        self.train_targets = TrainTargets(self._teacher_target, config.teacher_cache_mb * 2**20)
        #: the feature distortion of ``config.feature_distortion`` (set by a subclass that knows the space)
        self.features: FeatureDistortion | None = None

    # --- the dense side, once -------------------------------------------------------------

    def _target(self, logits: torch.Tensor) -> torch.Tensor | TopK:
        logprobs = F.log_softmax(logits.float(), dim=-1)
        if not self.top_k:
            return logprobs
        values, indices = logprobs.topk(self.top_k, dim=-1)
        return TopK(logprobs=values, indices=indices)

    def _teacher_target(self, batch: torch.Tensor) -> torch.Tensor | TopK:
        with torch.no_grad():
            return self._target(next_token_logits(self._teacher, batch))

    def _val_target(self, index: int, batch: torch.Tensor) -> torch.Tensor | TopK:
        """The dense targets of held-out batch ``index`` (a full batch, cached on the CPU)."""
        if index not in self._val_targets:
            size = self.config.eval_batch_size
            full = self.data.val[index * size: (index + 1) * size].to(self.device)
            with torch.no_grad():
                target = self._target(next_token_logits(self._teacher, full))
            self._val_targets[index] = (target.cpu() if isinstance(target, torch.Tensor)
                                        else TopK(target.logprobs.cpu(), target.indices.cpu()))
        target = self._val_targets[index]
        if isinstance(target, TopK):
            return TopK(target.logprobs[: len(batch)].to(self.device), target.indices[: len(batch)].to(self.device))
        return target[: len(batch)].to(self.device)

    @property
    def dense_metrics(self) -> dict[str, float]:
        """The dense model's scores on the whole held-out split (computed on first use)."""
        if self._dense_metrics is None:
            scores = self.score(self._teacher, eval_samples=None)
            self._dense_metrics = {**scores, "params": float(self.params_dense)}
        return self._dense_metrics

    def _val_batches(self, limit: int | None):
        n = len(self.data.val) if limit is None else max(1, min(limit, len(self.data.val)))
        size = self.config.eval_batch_size
        for start in range(0, n, size):
            yield self.data.val[start: min(n, start + size)].to(self.device)

    # --- one candidate ----------------------------------------------------------------------

    def run(
        self,
        levels: np.ndarray,
        *,
        fidelity: int,
        seed: int,
        eval_samples: int | None = None,
        init_state: dict[str, torch.Tensor] | None = None,
        init_levels: np.ndarray | None = None,
        measurement: bool = False,
    ) -> Evaluated:
        """Build ``levels``, distil it ``fidelity`` steps (continuing from ``init_state`` when
        given, with a fresh schedule), then score it on ``eval_samples`` held-out sequences.
        ``init_levels`` (the levels ``init_state`` was trained at) must keep what ``levels``
        keeps: narrowing a language model's trained weights to deeper levels is not built.
        A searcher's ``measurement`` trains as ``measurement_training`` says (``features``:
        feature mimicking at the pruned stages, at the run's learning rate). Raises
        :class:`EvaluationFailed` when it cannot."""
        if (init_state is not None and init_levels is not None
                and not np.array_equal(np.asarray(init_levels), np.asarray(levels))):
            raise EvaluationFailed("a language model cannot continue a trial at other levels than its own "
                                   "(dp's rounds need it; use rounds=1)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._run(levels, fidelity=fidelity, seed=seed, eval_samples=eval_samples, init_state=init_state,
                             measurement=measurement)

    def _run(self, levels: np.ndarray, *, fidelity: int, seed: int, eval_samples: int | None,
             init_state: dict[str, torch.Tensor] | None, measurement: bool) -> Evaluated:
        started = time.perf_counter()
        try:
            model, keep = self.build(levels)
            if model is self.dense:
                model = copy.deepcopy(model)
            if init_state is not None:
                model.load_state_dict(init_state)
        except (RuntimeError, ValueError, IndexError, KeyError) as exc:
            raise EvaluationFailed(f"could not build the candidate: {type(exc).__name__}: {exc}") from exc
        extra = dict(self.cost(levels, model)) if self.cost is not None else {}
        params = _count_params(model)
        model = model.to(self.device)
        built = time.perf_counter()
        try:
            if measurement and self.config.measurement_training == "features" and self.features is not None:
                outcome = self.features.mimic(model, keep, steps=fidelity, batch_size=self.config.batch_size,
                                              warmup_fraction=self.config.warmup_fraction, seed=seed,
                                              lr=self.config.lr, max_grad_norm=self.config.max_grad_norm)
                if outcome.diverged:
                    raise EvaluationFailed(f"feature mimicking diverged: loss {outcome.final_loss} "
                                           f"at step {outcome.steps}")
                steps, sequences = outcome.steps, outcome.samples
            else:
                steps, sequences = self.distil(model, steps=fidelity, seed=seed)
            trained = time.perf_counter()
            scores = self.score(model, eval_samples=eval_samples)
            if self.features is not None:
                scores.update(self.features.measure(model, keep, limit=eval_samples))
            latency = self.measure_latency(model, seed=seed) if self.config.measure_latency else {}
        except torch.OutOfMemoryError as exc:
            raise EvaluationFailed(f"out of memory: {exc}") from exc
        except MemoryError as exc:
            raise EvaluationFailed("out of memory") from exc
        except RuntimeError as exc:  # other runtime failures of this candidate
            raise EvaluationFailed(f"retraining or scoring failed: {type(exc).__name__}: {exc}") from exc
        if not all(math.isfinite(scores[k]) for k in ("loss", "kl_to_dense")):
            raise EvaluationFailed(f"held-out loss is {scores['loss']}, KL {scores['kl_to_dense']}")
        metrics: dict[str, float] = {
            **scores,
            **latency,
            "params": float(params),
            "params_ratio": params / self.params_dense,
            **extra,
            "steps": float(steps),
            "samples": float(sequences),
            "build_seconds": built - started,
            "train_seconds": trained - built,
            "threads": float(torch.get_num_threads()),
        }
        metrics["seconds"] = time.perf_counter() - started
        return Evaluated(model=model.cpu().eval(), keep_indices=keep, metrics=metrics)

    def evaluate(self, levels: np.ndarray, *, fidelity: int, seed: int) -> dict[str, float]:
        """Metrics of ``levels`` after ``fidelity`` retraining steps."""
        return self.run(levels, fidelity=fidelity, seed=seed).metrics

    def distil(self, model: nn.Module, *, steps: int, seed: int) -> tuple[int, int]:
        """Train ``model`` ``steps`` batches towards the dense model; returns (steps, sequences seen).

        Raises :class:`EvaluationFailed` when the loss stops being finite."""
        cfg = self.config
        if steps <= 0:
            return 0, 0
        trainable = _trainable(model, norms_and_biases_only=cfg.train_norms_and_biases_only)
        if not trainable:
            raise EvaluationFailed("the candidate has no parameter to retrain")
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
        generator = torch.Generator().manual_seed(seed)
        n = len(self.data.train)
        size = min(cfg.batch_size, n)
        order, cursor = torch.randperm(n, generator=generator), 0
        seen = 0
        model.train()
        for step in range(steps):
            if cursor + size > n:
                order, cursor = torch.randperm(n, generator=generator), 0
            indices = order[cursor: cursor + size]
            batch = self.data.train[indices].to(self.device)
            cursor += size
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, steps, cfg.lr, cfg.warmup_fraction)
            target = self.train_targets(indices, batch)
            logits = next_token_logits(model, batch)
            loss = token_kl(logits, target).mean()
            if cfg.lm_weight > 0:
                ce = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
                loss = (1 - cfg.lm_weight) * loss + cfg.lm_weight * ce
            value = float(loss.detach())
            seen += len(batch)
            if not math.isfinite(value):
                model.eval()
                raise EvaluationFailed(f"retraining diverged: loss {value} at step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
        return steps, seen

    def score(self, model: nn.Module, *, eval_samples: int | None = None) -> dict[str, float]:
        """Held-out ``kl_to_dense``, ``loss`` and ``perplexity`` of ``model`` on the first
        ``eval_samples`` validation sequences (all when None)."""
        model.eval()
        kl_sum, loss_sum, tokens, sequences = 0.0, 0.0, 0, 0
        with torch.no_grad():
            for index, batch in enumerate(self._val_batches(eval_samples)):
                logits = next_token_logits(model, batch)
                labels = batch[:, 1:]
                target = self._val_target(index, batch)
                kl_sum += float(token_kl(logits, target).sum())
                loss_sum += float(F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum"))
                tokens += labels.numel()
                sequences += len(batch)
        loss = loss_sum / tokens
        return {"kl_to_dense": kl_sum / tokens, "loss": loss,
                "perplexity": math.exp(loss) if loss < 700 else math.inf,
                "eval_samples": float(sequences), "eval_tokens": float(tokens), "kl_top_k": float(self.top_k)}

    def measure_latency(self, model: nn.Module, *, seed: int = 0) -> dict[str, float]:
        """Median milliseconds of one prefill, and per decoded token with the key/value cache."""
        return measure_lm_latency(model, self.config, self.data.seq_len, seed=seed)


def split_perplexity(model: nn.Module, tokens: torch.Tensor, *, batch_size: int = 8, device: str = "cpu") -> dict[str, float]:
    """Cross-entropy (nats per token) and perplexity of ``model`` on every sequence of
    ``tokens`` (a split such as the test split, scored only when a model is reported)."""
    device = _resolve_device(device)
    model = model.to(device).eval()
    loss_sum, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(tokens), batch_size):
            batch = tokens[start: start + batch_size].to(device)
            logits = next_token_logits(model, batch)
            loss_sum += float(F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum"))
            count += batch[:, 1:].numel()
    loss = loss_sum / count
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}


def measure_lm_latency(model: nn.Module, config: LMEvaluatorConfig, seq_len: int, *, seed: int = 0,
                       decode_too: bool = True) -> dict[str, float]:
    """Median milliseconds of one prefill of ``(config.latency_batch_size, seq_len)`` tokens (or
    ``config.latency_seq_len``), and per decoded token with the key/value cache (unless not
    ``decode_too``), on ``config.device``. A function, so a Ray worker can measure the dense
    model where its trials are measured."""
    cfg = config
    device = _resolve_device(cfg.device)
    home = next(model.parameters()).device
    model.to(device)  # in place: moved back below, so a dense model timed on a GPU stays where it was
    try:
        return _time_prefill_and_decode(model, cfg, seq_len, device, seed=seed, decode_too=decode_too)
    finally:
        model.to(home)


def _time_prefill_and_decode(model: nn.Module, cfg: LMEvaluatorConfig, seq_len: int, device: str, *, seed: int,
                             decode_too: bool) -> dict[str, float]:
    context = max_context(model.config) or 10**9
    prefill_len = min(cfg.latency_seq_len or seq_len, context)
    prompt_len = max(1, min(prefill_len, context - cfg.decode_tokens))
    vocab = int(model.get_output_embeddings().weight.shape[0])
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (cfg.latency_batch_size, prefill_len), generator=generator).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    # transformers 5.2x renamed ``past_key_values`` to ``cache``; older releases know only the first
    cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    model.eval()
    prefill: list[float] = []
    decode: list[float] = []
    with torch.inference_mode():
        model(input_ids=tokens, use_cache=False)  # warm-up
        for _ in range(cfg.latency_repeats):
            sync()
            start = time.perf_counter()
            model(input_ids=tokens, use_cache=False)
            sync()
            prefill.append((time.perf_counter() - start) * 1e3)
        for _ in range(cfg.latency_repeats if decode_too else 0):
            out = model(input_ids=tokens[:, :prompt_len], use_cache=True)
            past, nxt = _kv_cache(out), out.logits[:, -1:].argmax(dim=-1)
            sync()
            start = time.perf_counter()
            for _ in range(cfg.decode_tokens):
                out = model(input_ids=nxt, use_cache=True, **{cache_argument: past})
                past, nxt = _kv_cache(out), out.logits[:, -1:].argmax(dim=-1)
            sync()
            decode.append((time.perf_counter() - start) * 1e3 / cfg.decode_tokens)
    q1, median, q3 = np.percentile(prefill, [25, 50, 75])
    timed = {"latency_ms": float(median), "latency_iqr_ms": float(q3 - q1)}
    return {**timed, "decode_ms_per_token": float(np.median(decode))} if decode_too else timed


def _kv_cache(output: object) -> object:
    """The key/value cache a forward pass with ``use_cache=True`` returned, under either name."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values")


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but CUDA is not available here")
    return device


def _count_params(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding and output layer count once)."""
    return sum(p.numel() for p in model.parameters())


def _trainable(model: nn.Module, *, norms_and_biases_only: bool) -> list[nn.Parameter]:
    """The parameters retraining updates; the others are frozen (PERP keeps only norms and biases)."""
    if not norms_and_biases_only:
        chosen = list(model.parameters())
    else:
        ids: set[int] = set()
        for module in model.modules():
            is_norm = "norm" in type(module).__name__.lower()
            for name, p in module.named_parameters(recurse=False):
                if is_norm or name == "bias":
                    ids.add(id(p))
        chosen = [p for p in model.parameters() if id(p) in ids]
    keep = {id(p) for p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return chosen


def _lr_at(step: int, total: int, lr: float, warmup_fraction: float) -> float:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to zero."""
    warmup = max(1, int(warmup_fraction * total))
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * lr * (1.0 + math.cos(math.pi * progress))
