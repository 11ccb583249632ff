"""The Python API, mirroring the CLI: ``search``, ``resume``, ``open_run``, ``Run.pick``,
``Run.export`` and ``load``."""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from autoprune.config import SearchConfig
from autoprune.errors import UserError
from autoprune.evaluation.checkpoints import CheckpointStore
from autoprune.executors import Executor, LocalExecutor
from autoprune.factory import is_factory_spec
from autoprune.interrupts import Terminated
from autoprune.pick import pick_row
from autoprune.loop import LoopStats, run_loop
from autoprune.searchers import check_searcher, make_searcher
from autoprune.searchers.base import TRIAL
from autoprune.space.latency_model import LatencyModel
from autoprune.space.search_space import SearchSpace
from autoprune.store.front import hypervolume, objectives_for, pareto_front, trials_table
from autoprune.store.front_keeper import FrontKeeper
from autoprune.store.quality import Quality
from autoprune.store.record import RunRecord
from autoprune.store.journal import Journal
from autoprune.threads import evaluation_threads
from autoprune.store.lock import RunLock
from autoprune.store.run_dir import DISK_FULL, check_new_run_dir, section_error, write_front

logger = logging.getLogger(__name__)


class Run:
    """A run directory, read: its configuration, trials and Pareto front.

    Reading takes no lock and writes nothing. ``trust_factory``: whether a model or data
    factory that run.json names (``package.module:function``) may be imported to rebuild
    the run's model or data, which :meth:`export` does (code named by a file runs only
    with the user's consent; a run returned by :func:`search` trusts the factories its
    caller named)."""

    def __init__(self, path: str | Path, *, trust_factory: bool = False) -> None:
        self.path = _run_path(path, "run_dir")
        if not isinstance(trust_factory, bool):
            raise UserError(f"trust_factory must be True or False, got {trust_factory!r}.")
        self.trust_factory = trust_factory
        self.record = RunRecord.read(self.path)
        self.config = SearchConfig.from_dict(self.record.config, source=f"{self.path}/run.json")
        for section in ("space", "latency_model"):
            try:
                self._read_section(section)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise section_error(self.path, section, exc) from None
        self.last_stats: LoopStats | None = None

    def _read_section(self, section: str) -> None:
        if section == "space":
            self.space = SearchSpace.from_dict(self.record.space)
        else:
            stored_latency = self.record.latency_model
            self.latency_model = LatencyModel.from_dict(stored_latency) if stored_latency else None

    @property
    def info(self) -> dict[str, Any]:
        """run.json as a mapping (a copy: the run is changed through :attr:`record`)."""
        return self.record.to_dict()

    @property
    def quality(self) -> Quality:
        return self.record.quality

    @property
    def limits(self) -> dict[str, float]:
        return self.record.limits

    @property
    def dense(self) -> dict[str, float]:
        return self.record.dense

    @property
    def trials(self) -> pd.DataFrame:
        """Every journaled trial, one row each."""
        journal = Journal(self.path)
        return trials_table(list(journal.records.values()), self.space.group_names, self.limits,
                            self.latency_model)

    @property
    def front(self) -> pd.DataFrame:
        """The Pareto front over quality (accuracy, or a language model's perplexity), FLOPs,
        params and latency (within budget only)."""
        return pareto_front(self.trials, objectives_for(self.quality))

    @property
    def hypervolume(self) -> float:
        return hypervolume(self.front, self.dense, self.quality)

    def pick(self, spec: str | int) -> pd.Series:
        """One trial by id (``12``, ``"trial=12"``) or by constraints and objective
        (``"flops<=0.3"`` picks the best accuracy among front members with at most 30% of
        the dense FLOPs), ``"searcher"``: the searcher's own choice, where it has one, or
        ``"auto"``: that choice where there is one, else ``"best"``."""
        if isinstance(spec, str) and not spec.strip():
            raise UserError("pick is empty; give a trial id, 'best', 'auto' or constraints such as 'flops<=0.3'.")
        return pick_row(self.trials, self.front, spec, self.dense, quality=self.quality,
                        incumbent=self.record.incumbent,
                        searcher=self.config.searcher)

    def export(self, out: str | Path, *, pick: str | int = "auto", steps: int | None = None,
               threads: int | None = None, export_format: str = "safetensors") -> dict[str, Any]:
        """Rebuild the picked trial, fine-tune it ``steps`` steps (default: the run's fidelity),
        report its test accuracy, and write ``model.safetensors`` and ``recipe.json`` to ``out``;
        ``export_format="onnx"`` adds ``model.onnx``, checked against PyTorch in onnxruntime and
        timed there (the recipe's ``onnx``; image models only).

        It runs in this process, with ``threads`` torch threads (default: as a local search
        chooses them, :func:`~autoprune.threads.evaluation_threads`), whatever the run's
        executor was."""
        from autoprune.export import export_trial
        from autoprune.onnx_export import check_format

        if not isinstance(out, (str, os.PathLike)) or not str(out):
            raise UserError(f"export needs the path of an output folder, got {out!r}.")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
            raise UserError(f"steps must be a whole number >= 0, got {steps!r}.")
        check_format(export_format, language_model=self.quality.metric == "perplexity")
        check_factory_consent(self.config, self.path, trusted=self.trust_factory)
        row = self.pick(pick)
        with evaluation_threads(threads):
            return export_trial(self, row, Path(out), steps=steps, export_format=export_format)

    def write_front(self) -> pd.DataFrame:
        front = self.front
        write_front(self.path, front)
        return front

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, trials={len(Journal(self.path))})"


def _run_path(path: Any, what: str) -> Path:
    """``path`` as a Path, or one sentence when it is not a path at all."""
    if not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)):
        raise UserError(f"{what} must be the path of a run directory (text or a Path), got {path!r}.")
    return Path(path)


def factory_specs(config: SearchConfig) -> list[str]:
    """The ``package.module:function`` names in a run's configuration (its model and data)."""
    return [spec for spec in (config.model, config.data) if spec and is_factory_spec(spec)]


def check_factory_consent(config: SearchConfig, path: Path, *, trusted: bool) -> None:
    """Refuse to import the factories a run.json names unless the user consented: a run
    folder may come from elsewhere, and importing its factory runs whatever code it names."""
    specs = factory_specs(config)
    if specs and not trusted:
        raise UserError(f"{str(path / 'run.json')!r} names the factory {specs[0]!r}, code that rebuilding the run "
                        "would import and run; if you trust it (you started this run), pass --trust-factory "
                        "(Python: trust_factory=True).")


def open_run(path: str | Path, *, trust_factory: bool = False) -> Run:
    """Read the run at ``path`` (no lock, nothing written); ``trust_factory`` as in :class:`Run`."""
    return Run(path, trust_factory=trust_factory)


def default_run_dir() -> Path:
    return Path("runs") / datetime.now().strftime("search-%Y%m%d-%H%M%S")


def search(*, run_dir: str | Path | None = None, progress: bool = True, **options: Any) -> Run:
    """Start a search (options as in :class:`SearchConfig`) and return the finished run."""
    config = SearchConfig.from_dict(options, source="search options")
    path = _run_path(run_dir, "run_dir") if run_dir is not None else default_run_dir()
    check_new_run_dir(path)
    check_searcher(config.searcher, config.searcher_options)
    with in_process_threads(config):
        return _start(config, path, progress=progress)


def _start(config: SearchConfig, path: Path, *, progress: bool) -> Run:
    from autoprune.setup_run import prepare

    # workers start before the run directory is made: a bad --address writes nothing
    prepared = prepare(config, start_executor=lambda evaluator: make_executor(config, evaluator))
    executor = prepared.executor
    try:
        searcher = make_searcher(config.searcher, problem=prepared.problem, seed=config.seed,
                                 options=config.searcher_options)
        lock = new_run_record(config, prepared, searcher.options()).create(path)
    except BaseException:
        executor.close()
        raise
    try:
        run = Run(path, trust_factory=True)  # the caller named its factories itself
        journal = Journal(path, writable=True)
    except BaseException:
        executor.close()
        lock.release()
        raise
    return _drive(run, prepared, searcher, executor, journal, lock, config=config, progress=progress)


def new_run_record(config: SearchConfig, prepared: Any, searcher_options: dict[str, Any]) -> RunRecord:
    """The run record of a new run of ``config`` (``prepared`` by ``setup_run.prepare``)."""
    from autoprune.setup_run import environment

    return RunRecord(
        created_at=datetime.now(timezone.utc).isoformat(),
        config=config.to_dict(),
        searcher=searcher_options,
        evaluator=prepared.evaluator_record(),
        quality=prepared.quality,
        weights=prepared.task.weights_source,
        data_fingerprint=prepared.data_fingerprint,
        model_spec=prepared.task.model_spec.to_dict(),
        never_prune=list(prepared.task.space_config.never_prune),
        dense=prepared.dense_metrics,
        dense_latency=prepared.dense_latency,
        limits=prepared.constraints.to_dict(),
        space=prepared.space.to_dict(),
        latency_model=(prepared.constraints.latency_model.to_dict()
                       if prepared.constraints.latency_model is not None else None),
        environment=environment(),
        sessions=[],
    )


#: what a resume may change: the run's length, and where and how its trials are evaluated,
#: which belong to the machine it continues on rather than to the run (the same seed gives
#: the same trials on any executor)
RESUME_SETTABLE = ("trials", "time_limit", "threads", "executor", "workers", "address", "gpus_per_worker")


def resume(run_dir: str | Path, *, progress: bool = True, trust_factory: bool = False, **changes: Any) -> Run:
    """Continue a stopped run: journaled trials are replayed, not evaluated again.

    ``changes`` may set any of :data:`RESUME_SETTABLE`: ``trials`` and ``time_limit`` extend
    the run; ``threads``, ``executor``, ``workers``, ``address`` and ``gpus_per_worker`` move it
    to another machine or cluster. The run's lock is taken first (a second writer is refused),
    then its journal is checked (a damaged line refuses the resume; a torn last line is cut).
    ``trust_factory``: consent to import the model or data factory run.json names."""
    refused = sorted(set(changes) - set(RESUME_SETTABLE))
    if refused:
        raise UserError(f"resume cannot change {', '.join(refused)}: a run keeps its own settings "
                        f"(only {', '.join(RESUME_SETTABLE)} may change).")
    changes = {key: value for key, value in changes.items() if value is not None}
    run = Run(run_dir, trust_factory=trust_factory)
    check_factory_consent(run.config, run.path, trusted=trust_factory)
    lock = RunLock.acquire(run.path)
    try:
        return _resume_locked(run, lock, progress=progress, changes=changes)
    except BaseException:
        lock.release()  # _drive releases it once it runs; before that, here
        raise


def _resume_locked(run: Run, lock: RunLock, *, progress: bool, changes: dict[str, Any]) -> Run:
    run.record = RunRecord.read(run.path)  # as it is now that we hold the run: another writer may have ended since
    journal = Journal(run.path, writable=True)  # refuses a damaged journal, cuts a torn last line
    config = run.config
    done = len(journal)  # a count: no need to build the trials table
    recorded = sum(int(session.get("evaluated", 0)) for session in run.record.sessions if isinstance(session, dict))
    if done < recorded:  # sessions record what they journaled: fewer lines means the file lost some
        lost = recorded - done
        logger.warning("%s holds %d trials, but the run's sessions journaled %d: %d %s lost (the file was "
                       "truncated or replaced); %s evaluated again", journal.path, done, recorded, lost,
                       "was" if lost == 1 else "were", "it is" if lost == 1 else "they are")
    trials = changes.get("trials")
    candidates = sum(record.get("kind", TRIAL) == TRIAL for record in journal.records.values())  # not measurements
    if isinstance(trials, int) and trials < candidates:
        raise UserError(f"--trials {trials} is the run's total, and it already has {candidates} trials; "
                        f"give a larger total to extend it (e.g. --trials {candidates + config.trials}).")
    if "executor" in changes:  # a new placement: the earlier sessions' workers and address go with the old one
        config = replace(config, executor="local", workers=None, address=None, gpus_per_worker=None)
    if changes:
        config = SearchConfig.from_dict({**config.to_dict(), **changes}, source="resume")
    with in_process_threads(config):
        return _continue(run, config, journal, lock, progress=progress)


def _continue(run: Run, config: SearchConfig, journal: Journal, lock: RunLock, *, progress: bool) -> Run:
    from autoprune.setup_run import check_same_model, check_same_space, prepare

    prepared = prepare(config, start_executor=lambda evaluator: make_executor(config, evaluator),
                       latency_model=run.latency_model, searched_data=run.record.data_fingerprint)
    try:
        check_same_space(run.record.space, prepared.space, str(run.path))
        check_same_model(run.record.model_spec, prepared, str(run.path))
        searcher = make_searcher(config.searcher, problem=prepared.problem, seed=config.seed,
                                 options=config.searcher_options)
    except BaseException:
        prepared.executor.close()
        raise
    return _drive(run, prepared, searcher, prepared.executor, journal, lock, config=config, progress=progress)


@contextmanager
def in_process_threads(config: SearchConfig) -> Iterator[None]:
    """The torch threads of a run that evaluates in this process: ``--threads``, or when
    none is named torch's default, lowered (with a warning) where other programs keep
    cores busy (:func:`autoprune.threads.default_threads`)."""
    if config.executor != "local":
        yield  # Ray workers set their own threads; the driver only journals
        return
    with evaluation_threads(config.threads):
        yield


def make_executor(config: SearchConfig, evaluator: Any) -> Executor:
    """The executor named by ``config.executor``: workers that evaluate like ``evaluator``."""
    if config.executor == "ray":
        from autoprune.executors.ray_executor import RayExecutor

        return RayExecutor.from_evaluator(evaluator, workers=config.workers, address=config.address,
                                          gpus_per_worker=config.gpus_per_worker, threads=config.threads)
    return LocalExecutor(evaluator)


def _drive(run: Run, prepared: Any, searcher: Any, executor: Executor, journal: Journal, lock: RunLock, *,
           config: SearchConfig, progress: bool) -> Run:
    """Run the loop with ``config`` (a resume's may differ from the stored one) and record the session;
    ``journal`` is open for writing under ``lock``, which is released at the end.

    The config and the searcher's choice are stored only once the searcher has heard the whole
    journal: a resume that fails or is stopped while replaying leaves them as they were. A full
    disk ends the session with one sentence; every trial journaled before it is kept."""
    journaled = len(journal)
    note = searcher.plan(config.trials)
    if note:
        logger.info(note)
    started = time.time()
    stats = LoopStats()
    usage = None
    try:
        _open_session(run, executor, config, started)
        # the front kept trial by trial: rewriting it from the whole journal each time made runs quadratic
        keeper = FrontKeeper(path=run.path, group_names=run.space.group_names, limits=run.limits,
                             latency_model=run.latency_model, objectives=objectives_for(run.quality),
                             records=journal.records.values())
        searcher.keep_files_in(run.path)
        run_loop(
            searcher=searcher, executor=executor, journal=journal, trials=config.trials,
            default_fidelity=config.fidelity, seed=config.seed, time_limit=config.time_limit,
            checkpoints=CheckpointStore(run.path / "checkpoints"),
            on_result=lambda result: keeper.add(journal.records[result.trial_id]),
            progress=progress, stats=stats,
        )
        usage = executor.utilisation()
    except BaseException as exc:
        # an interrupted session is recorded too: run.json then tells what it did before the stop
        if isinstance(exc, Terminated):
            stats.stopped_by = f"stopped by {exc.signal_name}"
        elif isinstance(exc, KeyboardInterrupt):
            stats.stopped_by = "interrupted"
        elif isinstance(exc, OSError) and exc.errno in DISK_FULL:
            stats.stopped_by = "disk full"
        else:
            stats.stopped_by = f"error: {type(exc).__name__}"
        disk_full = isinstance(exc, OSError) and exc.errno in DISK_FULL
        _close_session(run, executor, lock, stats, started, usage, searcher, config, journaled)
        if disk_full:
            raise UserError(f"no space left on the device of {str(run.path)!r} ({len(journal)} trials are journaled "
                            f"and kept); free some space, then resume with: autoprune search --resume "
                            f"{run.path}") from None
        raise
    _close_session(run, executor, lock, stats, started, usage, searcher, config, journaled)
    run.write_front()
    run.last_stats = stats
    return run


def _open_session(run: Run, executor: Executor, config: SearchConfig, started: float) -> None:
    """Record in run.json that a session runs, where and on how many workers, so that
    ``autoprune status`` can say so while it runs; :func:`_close_session` replaces the entry."""
    run.record.sessions.append({"started": started, "running": True, "host": socket.gethostname(),
                                 "pid": os.getpid(), "executor": config.executor,
                                 "worker_count": int(getattr(executor, "workers", 1))})
    try:
        run.record.write(run.path)
    except OSError as exc:  # only status misses it; the session itself can go on
        if exc.errno not in DISK_FULL:
            raise
        logger.warning("run.json of %s could not record the start of this session: %s", run.path, exc.strerror)


def _close_session(run: Run, executor: Executor, lock: RunLock, stats: LoopStats, started: float,
                   usage: Any, searcher: Any, config: SearchConfig, journaled: int) -> None:
    """Close the workers, record the session in run.json (where the disk still lets us) and
    release the run's lock, in that order, whatever happens in between."""
    try:
        executor.close()
        session = {"started": started, "seconds": time.time() - started, "evaluated": stats.evaluated,
                   "replayed": stats.replayed, "stopped_by": stats.stopped_by}
        if usage is not None:
            session["workers"] = usage
        run.record.sessions[-1] = session  # in place of the open session's entry
        if stats.replayed >= journaled:
            run.record.config, run.config = config.to_dict(), config
            run.record.incumbent = searcher.incumbent()
            report = searcher.report()
            if report:
                run.record.searcher_report = report
        try:
            run.record.write(run.path)
        except OSError as exc:  # the journal is what counts; run.json keeps its last whole version
            if exc.errno not in DISK_FULL:
                raise
            logger.warning("run.json of %s could not record this session: %s", run.path, exc.strerror)
    finally:
        lock.release()


def load(path: str | Path, *, factory: str | None = None):  # noqa: ANN201 (returns torch.nn.Module)
    """Rebuild an exported model (folder with ``recipe.json`` and ``model.safetensors``)
    in any process, without unpickling anything and without running code the folder names.

    Zoo architectures are rebuilt by autoprune itself. A model a user's factory built is
    rebuilt only when the caller names that factory here (``factory="pkg.mod:fn"``): the
    recipe's own factory name is never imported, as that would run whatever code a
    downloaded export points at. A language model is rebuilt from the Hugging Face config
    its recipe stores (supported families only, no remote code) and carries its tokenizer
    as ``model.autoprune_tokenizer``."""
    from autoprune.export import load_exported

    return load_exported(path, factory=factory)


def load_tokenizer(path: str | Path):  # noqa: ANN201 (a transformers tokenizer)
    """The tokenizer of a language-model export (read from its JSON files; no code runs)."""
    from autoprune.export import read_recipe

    recipe, folder = read_recipe(path)
    if recipe.get("kind") != "language-model":
        raise UserError(f"{str(path)!r} exports an image model, which has no tokenizer.")
    from autoprune.llm.export import load_tokenizer as read_tokenizer

    return read_tokenizer(folder)


__all__ = ["Run", "UserError", "load", "load_tokenizer", "open_run", "resume", "search"]
