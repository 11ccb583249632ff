"""autoprune's searchers and evaluator inside a Ray Tune run, and its results back in a run directory.

::

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from autoprune.integrations.pruning import prepare_pruning
    from autoprune.integrations.tune import AutopruneSearch, import_results, make_trainable

    pruning = prepare_pruning(data="fashion-mnist", model="resnet20", budget=["flops=0.05"], fidelity=200)
    search = AutopruneSearch.create("random", pruning=pruning)
    tuner = tune.Tuner(
        make_trainable(pruning, report_every=50),
        tune_config=tune.TuneConfig(search_alg=search, num_samples=96, max_concurrent_trials=8,
                                    metric="accuracy", mode="max", reuse_actors=True,
                                    scheduler=ASHAScheduler(time_attr="steps", max_t=200, grace_period=50)),
    )
    results = tuner.fit()
    run = import_results(results, pruning=pruning, run_dir="runs/tune-random", search=search)

- :class:`AutopruneSearch` is a Tune ``Searcher`` (``suggest``, ``on_trial_complete``)
  around any autoprune searcher. It asks the searcher a batch of
  :attr:`~autoprune.searchers.base.Searcher.batch_size` proposals, hands them to Tune
  one trial at a time, and tells the searcher the whole batch, in proposal order, once
  every trial of it has completed, as the run loop does: what is proposed does not
  depend on the order Tune's trials finish in. A proposal evaluated before is answered
  from memory, never run twice. A trial stopped early by a scheduler is told with the
  held-out metrics it last reported. A searcher's measurements (``dp``'s probes) are Tune
  trials too, and count against ``num_samples``, unlike ``--trials``.
- :func:`make_trainable` is the evaluator as a Tune function trainable: it builds the
  evaluator once per worker process from one object in Ray's object store
  (``tune.with_parameters``; ``reuse_actors=True`` keeps those processes from trial to
  trial, else every trial builds it again), retrains the trial's candidate and reports held-out
  ``accuracy``, ``loss`` and ``kl_to_dense`` (with ``steps`` and the candidate's costs)
  every ``report_every`` steps and at the end, so ASHA or Hyperband stop poor candidates
  early and Tune's loggers (CSV, JSON, TensorBoard; MLflow and W&B callbacks where
  installed) and result tables show them. A searcher that continues a parent's training
  (``darwin``) gets the parent's weights through a safetensors file in the parent trial's
  directory, which a worker on another node reads only on shared storage.
- An interrupted Tune run continues with ``tune.Tuner.restore(path, trainable=...)``:
  :meth:`AutopruneSearch.save` keeps the searcher's state (as JSON) with each experiment
  checkpoint and :meth:`AutopruneSearch.restore` replays it, so the search goes on as if
  it had never stopped.
- :func:`import_results` writes a Tune run's results into a new autoprune run directory
  (run.json, journal, front), so ``front``, ``export`` and ``report`` work on it. A
  trial stopped early is journaled at the steps it trained, so it stays off the front,
  which compares candidates at the run's full retraining only.

Ray is an optional dependency, imported when these are used.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from autoprune.errors import UserError
from autoprune.evaluation.evaluator import EvaluationFailed, Progress
from autoprune.integrations.pruning import Pruning
from autoprune.loop import MAX_IDLE_ASKS, draw_seed
from autoprune.searchers import make_searcher
from autoprune.searchers.base import MEASUREMENT, TRIAL, Proposal, Result, Searcher
from autoprune.store.journal import record_to_result, result_to_record

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'autoprune[tune]'"
#: where a trial that keeps its weights leaves them, in its Tune trial directory
STATE_FILE = "autoprune_state.safetensors"
#: the format of the searcher state :meth:`AutopruneSearch.save` writes
STATE_FORMAT = 1
#: metrics every report carries besides the evaluator's scores
COST_METRICS = ("flops", "params", "flops_ratio", "params_ratio")


def import_tune() -> Any:
    """``ray.tune``, or one sentence saying how to install it."""
    try:
        from ray import tune
    except ImportError:
        raise UserError(f"the Ray Tune integration needs Ray Tune, which is not installed; install it with "
                        f"{INSTALL_HINT}.") from None
    return tune


def _searcher_base() -> type:
    try:
        from ray.tune.search import Searcher as TuneSearcher
    except ImportError:  # the class below still imports; using it says how to install
        return object
    return TuneSearcher


# -- the searcher -----------------------------------------------------------------------------


@dataclass
class _Batch:
    """One ``ask`` of the autoprune searcher: its proposals, trial ids and results so far."""

    proposals: list[Proposal]
    trial_ids: list[int | None]  # None: answered from memory
    results: list[Result | None]
    next_out: int = 0  # proposals handed to Tune so far


class AutopruneSearch(_searcher_base()):  # type: ignore[misc]
    """An autoprune :class:`~autoprune.searchers.base.Searcher` as a Ray Tune searcher."""

    def __init__(self, searcher: Searcher, *, fidelity: int, seed: int, metric: str = "accuracy",
                 mode: str = "max") -> None:
        import_tune()
        if not isinstance(searcher, Searcher):
            raise ValueError(f"searcher must be an autoprune Searcher, got {type(searcher).__name__}")
        if not isinstance(fidelity, int) or isinstance(fidelity, bool) or fidelity < 0:
            raise ValueError(f"fidelity must be a whole number of steps >= 0, got {fidelity!r}")
        super().__init__(metric=metric, mode=mode)
        #: the autoprune searcher (not ``.searcher``: Tune walks that attribute through its wrappers)
        self.wrapped = searcher
        self.fidelity = fidelity
        self.seed = int(seed)
        #: every result, by autoprune trial id (trial ids in ask order, as the run loop gives them)
        self.results: dict[int, Result] = {}
        self._batch: _Batch | None = None
        self._by_tune_id: dict[str, tuple[int, int]] = {}  # Tune trial id -> (position in batch, trial id)
        self._seen: dict[tuple[Any, ...], Result | None] = {}
        self._states: dict[int, str] = {}  # trial id -> its weights file, for proposals that continue it
        self._next_id = 0
        self._idle = 0
        self._finished = False

    @classmethod
    def create(cls, name: str, *, pruning: Pruning, options: dict[str, Any] | None = None,
               **kwargs: Any) -> "AutopruneSearch":
        """The searcher ``name`` (with ``options``) on ``pruning``'s problem, at its
        configuration's fidelity and seed."""
        searcher = make_searcher(name, problem=pruning.problem, seed=pruning.config.seed, options=options)
        return cls(searcher, fidelity=pruning.config.fidelity, seed=pruning.config.seed, **kwargs)

    def _key(self, proposal: Proposal) -> tuple[Any, ...]:
        fidelity = self.fidelity if proposal.fidelity is None else proposal.fidelity
        return (tuple(int(v) for v in proposal.levels), fidelity, proposal.eval_samples, proposal.parent,
                proposal.draw, proposal.kind)

    def _new_batch(self) -> bool:
        """Ask the next batch; False when the searcher is finished (or only repeats itself)."""
        while True:
            proposals = self.wrapped.ask(self.wrapped.batch_size)
            if not proposals:
                return False
            batch = _Batch(proposals=proposals, trial_ids=[], results=[])
            for proposal in proposals:
                key = self._key(proposal)
                if key in self._seen:
                    batch.trial_ids.append(None)
                    batch.results.append(self._seen[key])
                else:
                    self._seen[key] = None
                    batch.trial_ids.append(self._next_id)
                    batch.results.append(None)
                    self._next_id += 1
            if any(t is not None for t in batch.trial_ids):
                self._idle = 0
                self._batch = batch
                return True
            self._idle += 1  # nothing new: tell the searcher and ask again
            self.wrapped.tell([r for r in batch.results if r is not None])
            if self._idle >= MAX_IDLE_ASKS:
                return False

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._finished:
            return self.FINISHED
        if self._batch is None and not self._new_batch():
            self._finished = True
            return self.FINISHED
        batch = self._batch
        assert batch is not None
        while batch.next_out < len(batch.proposals) and batch.trial_ids[batch.next_out] is None:
            batch.next_out += 1  # answered from memory
        if batch.next_out == len(batch.proposals):
            return None  # the batch is out; its results decide the next one
        position = batch.next_out
        batch.next_out += 1
        proposal, ours = batch.proposals[position], batch.trial_ids[position]
        assert ours is not None
        self._by_tune_id[trial_id] = (position, ours)
        return {
            "autoprune_trial": ours,
            "levels": [int(v) for v in proposal.levels],
            "fidelity": self.fidelity if proposal.fidelity is None else int(proposal.fidelity),
            "eval_samples": proposal.eval_samples,
            "parent": proposal.parent,
            "draw": proposal.draw,
            "kind": proposal.kind,
            "seed": draw_seed(self.seed, proposal.draw),
            "init_state": None if proposal.parent is None else self._states.get(proposal.parent),
            "init_levels": (None if proposal.parent is None or proposal.parent not in self.results
                            else [int(v) for v in self.results[proposal.parent].levels]),
            "keep_state": bool(self.wrapped.keeps_checkpoints),
        }

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self._by_tune_id or self._batch is None:
            logger.warning("a Tune trial %s this searcher did not suggest completed; ignored", trial_id)
            return
        position, ours = self._by_tune_id.pop(trial_id)
        batch = self._batch
        proposal = batch.proposals[position]
        outcome = result_of(ours, proposal, self.fidelity, result, error)
        if outcome.ok and result is not None and result.get("autoprune_state"):
            self._states[ours] = str(result["autoprune_state"])
        self._record(ours, proposal, outcome)
        if all(r is not None for r in batch.results):
            self._batch = None
            self.wrapped.tell([r for r in batch.results if r is not None])

    # -- an interrupted Tune experiment: Tuner.restore --------------------------------------

    def get_state(self) -> dict[str, Any]:
        """What :meth:`restore` needs, as JSON: every result told or waiting in the open
        batch, the open batch's hand-out position and which Tune trial holds which of its
        proposals, and the weights files later proposals may continue."""
        batch = self._batch
        return {
            "format": STATE_FORMAT,
            "searcher": self.wrapped.name, "seed": self.wrapped.seed, "options": self.wrapped.options(),
            "fidelity": self.fidelity, "run_seed": self.seed,
            "results": {str(t): result_to_record(r) for t, r in sorted(self.results.items())},
            "batch": None if batch is None else {"next_out": batch.next_out},
            "by_tune_id": {k: list(v) for k, v in self._by_tune_id.items()},
            "states": {str(t): path for t, path in self._states.items()},
            "next_id": self._next_id, "finished": self._finished,
        }

    def save(self, checkpoint_path: str) -> None:
        """Tune's searcher checkpoint (``Tuner.fit`` calls it with each experiment
        checkpoint): :meth:`get_state` as JSON, never a pickle."""
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        """Continue where :meth:`save` left off (``tune.Tuner.restore`` calls it on the
        searcher it unpickles from the experiment, which has not proposed anything yet).

        Resume is replay, as for ``autoprune search --resume``: the searcher is asked again
        and told the saved results batch by batch, so it reaches the state it had, and the
        open batch's proposals Tune still holds (its unfinished trials, which it runs again)
        are completed under their old trial ids; nothing already scored is suggested again."""
        try:
            state = json.loads(Path(checkpoint_path).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"the autoprune searcher state {checkpoint_path} cannot be read ({exc}); "
                            "restore from the experiment folder Tune wrote.") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise UserError(f"{checkpoint_path} is not an autoprune searcher state of format {STATE_FORMAT}; "
                            "restore from the experiment folder Tune wrote.")
        if self.wrapped.n_asked or self.results:
            raise RuntimeError("restore needs an AutopruneSearch that has not suggested anything yet")
        mine = {"searcher": self.wrapped.name, "seed": self.wrapped.seed, "fidelity": self.fidelity,
                "run_seed": self.seed}
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise UserError(f"the saved searcher state is for {theirs}, not this search's {mine}; restore the "
                            "experiment with the search it was started with.")
        done = {int(t): record_to_result(r) for t, r in state["results"].items()}
        self._states = {int(t): str(path) for t, path in state.get("states", {}).items()}
        while state["batch"] is not None or len(self.results) < len(done):
            if not self._new_batch():
                break
            batch = self._batch
            assert batch is not None
            for i, (proposal, ours) in enumerate(zip(batch.proposals, batch.trial_ids)):
                if ours is None or ours not in done:
                    continue
                if not np.array_equal(done[ours].levels, proposal.levels):
                    raise UserError(f"the Tune experiment cannot be restored: trial {ours} in the saved state "
                                    "differs from what the searcher proposes now (another autoprune version, "
                                    "searcher or search space); start a new experiment.")
                self._record(ours, proposal, done[ours])
            if all(r is not None for r in batch.results):
                self._batch = None
                self.wrapped.tell([r for r in batch.results if r is not None])
            else:
                break
        if (self._batch is None) != (state["batch"] is None) or len(self.results) != len(done):
            raise UserError("the Tune experiment cannot be restored: the searcher's replay does not reach the "
                            "saved state (another autoprune version or searcher); start a new experiment.")
        if self._batch is not None:
            self._batch.next_out = int(state["batch"]["next_out"])
        self._by_tune_id = {str(k): (int(v[0]), int(v[1])) for k, v in state["by_tune_id"].items()}
        self._finished = bool(state["finished"])
        logger.info("restored the %s searcher: %d results replayed, %d trials still held by Tune",
                    self.wrapped.name, len(done), len(self._by_tune_id))

    def _record(self, ours: int, proposal: Proposal, outcome: Result) -> None:
        """Keep ``outcome`` of trial ``ours`` and fill the open batch's places it answers."""
        batch = self._batch
        assert batch is not None
        self.results[ours] = outcome
        self._seen[self._key(proposal)] = outcome
        for i, t in enumerate(batch.trial_ids):
            if t == ours:
                batch.results[i] = outcome
        for i, t in enumerate(batch.trial_ids):  # answers from memory of this same batch's proposals
            if t is None and batch.results[i] is None:
                batch.results[i] = self._seen.get(self._key(batch.proposals[i]))


def result_of(trial_id: int, proposal: Proposal, default_fidelity: int, reported: dict[str, Any] | None,
              error: bool) -> Result:
    """The autoprune result of a Tune trial from the last metrics it reported."""
    common: dict[str, Any] = {
        "trial_id": trial_id, "levels": np.asarray(proposal.levels, dtype=np.int64),
        "fidelity": default_fidelity if proposal.fidelity is None else int(proposal.fidelity),
        "eval_samples": proposal.eval_samples, "parent": proposal.parent, "draw": proposal.draw,
        "kind": proposal.kind,
    }
    if error or not reported or "accuracy" not in reported:
        return Result(status="failed", error="the Tune trial failed (its error is in Tune's trial log)", **common)
    return Result(status="ok", metrics=_metrics(reported), **common)


def _metrics(reported: dict[str, Any]) -> dict[str, float]:
    """The evaluator's metrics among what a trial reported (Tune adds its own keys): the
    ``autoprune`` entry, nested (a ``ResultGrid``) or flattened (what a searcher hears)."""
    nested = reported.get("autoprune")
    if isinstance(nested, dict):
        items = list(nested.items())
    else:
        items = [(k[len("autoprune/"):], v) for k, v in reported.items() if k.startswith("autoprune/")]
    out = {k: float(v) for k, v in items if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not reported.get("autoprune_final", False):
        out["stopped_early"] = 1.0
    return out


# -- the trainable ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainablePayload:
    """What every trial's process needs, shipped once through Ray's object store."""

    token: str
    factory: Any  # RunnerFactory: builds a job runner (language models)
    payload: Any  # EvaluatorPayload for the image evaluator, else the factory's payload
    space: dict[str, Any]
    threads: int
    report_every: int | None


#: evaluators (or job runners) built in this worker process, by payload token
_BUILT: dict[str, Any] = {}


def make_trainable(pruning: Pruning, *, report_every: int | None = None, threads: int = 1) -> Any:
    """The evaluator as a Tune trainable (for trials that :class:`AutopruneSearch` suggests),
    each trial reserving ``threads`` CPUs and reporting every ``report_every`` steps."""
    tune = import_tune()
    from autoprune.executors.ray_worker import worker_setup

    if report_every is not None and (not isinstance(report_every, int) or isinstance(report_every, bool)
                                     or report_every < 1):
        raise ValueError(f"report_every must be a whole number of steps >= 1, got {report_every!r}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
    evaluator = pruning.evaluator
    factory, payload = worker_setup(evaluator)
    shipped = TrainablePayload(token=uuid.uuid4().hex, factory=factory, payload=payload,
                               space=pruning.space.to_dict(), threads=threads, report_every=report_every)
    trainable = tune.with_parameters(evaluate_trial, shipped=shipped)
    return tune.with_resources(trainable, {"cpu": threads})


def _built(shipped: TrainablePayload) -> tuple[Any, Any]:
    """This process's evaluator (or job runner) and space for ``shipped``, built on first use."""
    if shipped.token not in _BUILT:
        from autoprune.evaluation.evaluator import Evaluator
        from autoprune.executors.ray_worker import EvaluatorPayload
        from autoprune.space.search_space import SearchSpace

        space = SearchSpace.from_dict(shipped.space)
        if isinstance(shipped.payload, EvaluatorPayload):
            p = shipped.payload
            built: Any = Evaluator(dense=p.dense, data=p.data, space=SearchSpace.from_dict(p.space),
                                   never_prune=list(p.never_prune), config=p.config, importance=p.importance)
        else:
            built = shipped.factory(shipped.payload)
        _BUILT.clear()  # one run's evaluator at a time per process
        _BUILT[shipped.token] = (built, space)
    return _BUILT[shipped.token]


def evaluate_trial(config: dict[str, Any], shipped: TrainablePayload) -> None:
    """One Tune trial: retrain ``config``'s candidate, reporting held-out metrics as it goes."""
    import torch
    from ray import tune

    torch.set_num_threads(shipped.threads)
    evaluator, space = _built(shipped)
    levels = np.array(config["levels"], dtype=np.int64)
    costs = {"flops": float(space.cost("flops", levels)), "params": float(space.cost("params", levels)),
             "flops_ratio": float(space.relative_cost("flops", levels)),
             "params_ratio": float(space.relative_cost("params", levels))}
    common = {"autoprune_trial": int(config["autoprune_trial"])}

    def report(steps: int, scores: dict[str, float]) -> None:
        metrics = {**scores, **costs, "steps": steps}
        tune.report({**metrics, **common, "autoprune": metrics, "autoprune_final": False})

    init_state = None
    if config.get("init_state"):
        from safetensors.torch import load_file

        init_state = load_file(config["init_state"])
    if not hasattr(evaluator, "run"):  # a language model's job runner: one report at the end
        metrics = _run_job(evaluator, config, levels, init_state)
    else:
        kwargs: dict[str, Any] = {"fidelity": int(config["fidelity"]), "seed": int(config["seed"]),
                                  "eval_samples": config.get("eval_samples"), "init_state": init_state}
        if config.get("init_levels") is not None:  # a parent continued at deeper levels (dp's rounds)
            kwargs["init_levels"] = np.array(config["init_levels"], dtype=np.int64)
        if config.get("kind", TRIAL) == MEASUREMENT:  # trains as the run's measurements do
            kwargs["measurement"] = True
        if shipped.report_every is not None and "progress" in inspect.signature(evaluator.run).parameters:
            kwargs["progress"] = Progress(every=shipped.report_every, report=report)
        evaluated = evaluator.run(levels, **kwargs)  # EvaluationFailed: the trial errs, and is journaled failed
        metrics = dict(evaluated.metrics)
        if config.get("keep_state"):  # a later proposal continues this trial's training
            common["autoprune_state"] = _save_state(evaluated.model)  # type: ignore[assignment]
    metrics.setdefault("steps", int(config["fidelity"]))
    tune.report({**metrics, **common, "autoprune": metrics, "autoprune_final": True})


def _run_job(runner: Any, config: dict[str, Any], levels: np.ndarray, init_state: Any) -> dict[str, float]:
    from autoprune.executors.base import Job

    job = Job(trial_id=int(config["autoprune_trial"]), levels=levels, fidelity=int(config["fidelity"]),
              seed=int(config["seed"]), eval_samples=config.get("eval_samples"), parent=config.get("parent"),
              draw=int(config.get("draw", 0)), init_state=init_state, keep_state=False,
              kind=str(config.get("kind", TRIAL)),
              init_levels=None if config.get("init_levels") is None else np.array(config["init_levels"]))
    result = runner(job)
    if not result.ok:
        raise EvaluationFailed(result.error or "the evaluation failed")
    return dict(result.metrics)


def _save_state(model: Any) -> str:
    from ray import tune
    from safetensors.torch import save_file

    path = Path(tune.get_context().get_trial_dir()) / STATE_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return str(path)


# -- importing a Tune run -----------------------------------------------------------------------


def import_results(results: Any, *, pruning: Pruning, run_dir: str | os.PathLike[str],
                   search: AutopruneSearch | None = None) -> Any:
    """Write the trials of ``results`` (a Tune ``ResultGrid`` of :func:`make_trainable`
    trials) into a new autoprune run directory and return it as an :class:`autoprune.api.Run`.

    ``search``: the :class:`AutopruneSearch` that suggested them, whose searcher run.json
    then names (else the configuration's). A trial that failed is journaled failed; one
    stopped early, at the steps it trained (off the front)."""
    from autoprune.api import Run, new_run_record
    from autoprune.store.journal import Journal

    path = Path(run_dir)
    records = _trial_records(results)
    if not records:
        raise UserError("the Tune results hold no trial of autoprune's trainable (make_trainable); nothing to import.")
    config = pruning.config
    options: dict[str, Any] = {"imported_from": "ray-tune"}
    if search is not None:
        config = replace(config, searcher=search.wrapped.name)
        options.update(search.wrapped.options())
    config = replace(config, trials=len(records), searcher_options={k: v for k, v in options.items()
                                                                     if k not in ("seed", "batch_size",
                                                                                  "imported_from")})
    lock = new_run_record(config, pruning.prepared, options).create(path)
    try:
        journal = Journal(path, writable=True)
        for result in records:
            if result.ok:
                parent_steps = 0.0
                if result.parent is not None and result.parent in journal.records:
                    parent_steps = journal.records[result.parent]["metrics"].get("total_steps", 0)
                result.metrics["total_steps"] = parent_steps + result.metrics.get("steps", 0)
            journal.append(result_to_record(result, {"finished_at": time.time(), "imported_from": "ray-tune"}))
        run = Run(path, trust_factory=True)
        run.record.sessions.append({"started": time.time(), "seconds": 0.0, "evaluated": len(records),
                                    "replayed": 0, "stopped_by": "imported from Ray Tune"})
        run.record.write(path)
        run.write_front()
    finally:
        lock.release()
    return Run(path, trust_factory=True)


def _trial_records(results: Any) -> list[Result]:
    """Results of every autoprune trial in ``results``, by trial id; a trial stopped early
    carries the steps it trained as its fidelity."""
    out: dict[int, Result] = {}
    for trial in results:
        config = getattr(trial, "config", None) or {}
        if "autoprune_trial" not in config:
            continue
        ours = int(config["autoprune_trial"])
        proposal = Proposal(levels=np.array(config["levels"], dtype=np.int64), fidelity=int(config["fidelity"]),
                            eval_samples=config.get("eval_samples"), parent=config.get("parent"),
                            draw=int(config.get("draw", 0)), kind=str(config.get("kind", TRIAL)))
        reported = getattr(trial, "metrics", None) or {}
        result = result_of(ours, proposal, int(config["fidelity"]), reported, getattr(trial, "error", None) is not None)
        if not result.ok and getattr(trial, "error", None) is not None:
            result.error = str(trial.error).strip().splitlines()[-1][:500]
        if result.ok and result.metrics.get("stopped_early"):
            result.fidelity = int(result.metrics.get("steps", 0))
        out[ours] = result
    return [out[k] for k in sorted(out)]
