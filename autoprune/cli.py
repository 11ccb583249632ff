"""``autoprune`` command line: ``search``, ``front``, ``export``; ``compare``, ``report``, ``status``
(:mod:`autoprune.views.commands`).

Bad input ends with one sentence on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoprune import __version__
from autoprune.errors import UserError
from autoprune.interrupts import Terminated, handle_sigterm
from autoprune.searchers import SEARCHERS
from autoprune.views.commands import HANDLERS as VIEW_HANDLERS
from autoprune.views.commands import add_commands as add_view_commands

logger = logging.getLogger("autoprune")

# flag name -> (SearchConfig field, type, help)
SEARCH_FLAGS: dict[str, tuple[str, Any, str]] = {
    "--data": ("data", str, "built-in data (digits, fashion-mnist, cifar10, cifar100, folder), package.module:factory, "
                            "or text:PATH (a text file or folder, for a language model) [digits]"),
    "--model": ("model", str, "zoo model (digitnet, resnet20, resnet56, vgg16_bn, mobilenetv2), package.module:factory, "
                              "or hf:PATH (a local Hugging Face causal LM directory or .gguf file) [digitnet for digits]"),
    "--seq-len": ("seq_len", int, "tokens per sequence of a language model's text [256]"),
    "--data-root": ("data_root", str, "folder of the data (CIFAR binary files, image tree, Fashion-MNIST IDX files)"),
    "--image-size": ("image_size", int, "resize images of --data folder to this square size [32]"),
    "--checkpoint": ("checkpoint", str, "dense weights: .safetensors, or a torch state dict read with weights_only"),
    "--space": ("space_file", str, "search-space YAML (level grid, minimum keep, rounding, never_prune)"),
    "--searcher": ("searcher", str, f"{', '.join(sorted(SEARCHERS))} [random]; the README says how each searches"),
    "--trials": ("trials", int, "number of distinct candidates to evaluate [40]"),
    "--time-limit": ("time_limit", float, "stop after this many seconds of searching, at the next finished "
                                          "evaluation (--resume continues)"),
    "--fidelity": ("fidelity", int, "retraining steps per candidate [100]; "
                                    f"{' and '.join(sorted(n for n, c in SEARCHERS.items() if c.sets_fidelity))} "
                                    "set their own per stage"),
    "--bn-batches": ("bn_batches", int, "training batches for BatchNorm recalibration [8]"),
    "--lr": ("lr", float, "peak learning rate of retraining [0.05 SGD for images; 1e-4 AdamW for language models]"),
    "--batch-size": ("batch_size", int, "retraining batch size [64 images; 4 sequences]"),
    "--distill-weight": ("distill_weight", float, "weight of distillation from the dense model, 0..1 "
                                                  "[0.5 for images; 1 for language models]"),
    "--train-params": ("train_params", str, "what retraining updates: all, or norms-and-biases (PERP: only the "
                                            "normalisation weights and biases of a language model, faster) [all]"),
    "--latency-batch-size": ("latency_batch_size", int, "batch size of latency measurements [1]"),
    "--latency-repeats": ("latency_repeats", int, "timed repeats of each trial's latency, 0 to skip it "
                                                  "[20 images; 5 language models]"),
    "--device": ("device", str, "auto (CUDA when present), cpu or cuda[:N] [auto]"),
    "--executor": ("executor", str, "where candidates are evaluated: local or ray [local]"),
    "--workers": ("workers", int, "Ray workers to start (default: one per GPU, or per CPU without GPUs)"),
    "--address": ("address", str, "join this Ray cluster (auto, or HOST:PORT of a head) instead of starting one"),
    "--gpus-per-worker": ("gpus_per_worker", float, "GPUs per Ray worker, e.g. 0.5 to share a GPU [1 with GPUs]"),
    "--threads": ("threads", int, "torch threads per evaluation, here or per Ray worker (which reserves as many "
                                  "CPUs) [local: all cores, fewer beside busy ones; ray: 1]"),
    "--seed": ("seed", int, "seed of the searcher and of retraining [0]"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoprune", description="Search where to prune a trained network.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or info messages")
    parser.add_argument("--version", action="version", version=f"autoprune {__version__}")
    # -q is also accepted after the command; SUPPRESS keeps the command's default from
    # overwriting a -q given before it
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bar or info messages")
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", parents=[quiet], help="search per-layer sparsity under a budget")
    search.add_argument("--budget", action="append", metavar="KEY=VALUE",
                        help="flops=0.4 (ratio of dense), flops=20M, params=1.5e6, latency=3ms or latency=0.6; "
                             "repeatable, all must hold [flops=0.4]")
    for flag, (_, kind, text) in SEARCH_FLAGS.items():
        search.add_argument(flag, type=kind, default=None, help=text)
    search.add_argument("--searcher-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the searcher (value read as YAML), repeatable")
    search.add_argument("--config", metavar="FILE", help="YAML file with the same options (flags win)")
    search.add_argument("--run-dir", metavar="DIR", help="where the run is written [runs/search-DATE-TIME]")
    search.add_argument("--resume", metavar="RUN_DIR",
                        help="continue a stopped run; --trials and --time-limit may extend it, and --threads, "
                             "--executor, --workers, --address and --gpus-per-worker move it to another machine")
    search.add_argument("--trust-factory", action="store_true",
                        help="with --resume: import the model or data factory the run's run.json names "
                             "(code runs only with this consent)")

    front = commands.add_parser("front", parents=[quiet], help="print the Pareto front of a run")
    front.add_argument("run_dir", help="a run directory, as `autoprune search` printed it")
    front.add_argument("--all", action="store_true", help="print every trial, not only the front")
    front.add_argument("--plot", metavar="FILE.png",
                       help="also draw quality against FLOPs over every trial, with the front, into this PNG file")

    export = commands.add_parser("export", parents=[quiet], help="write a picked model as safetensors plus a JSON recipe")
    export.add_argument("run_dir", help="a run directory, as `autoprune search` printed it")
    export.add_argument("--pick", default="auto",
                        help="trial id, 'best' (best held-out accuracy on the front), constraints such as "
                             "'flops<=0.3', 'params<=30K', 'latency<=2ms', 'accuracy>=0.95' (best accuracy among "
                             "them; 'best=flops' minimises FLOPs instead), 'searcher' (the searcher's own choice, "
                             "where it has one), 'knee' (where quality against FLOPs bends), or 'auto': the "
                             "searcher's choice where there is one, else best [auto]")
    export.add_argument("--out", help="output folder [RUN_DIR/export-trial-ID]")
    export.add_argument("--format", dest="export_format", default="safetensors", choices=("safetensors", "onnx"),
                        help="onnx: also model.onnx, checked against PyTorch in onnxruntime and timed there "
                             "(image models; needs the onnx extra) [safetensors]")
    export.add_argument("--steps", type=int, help="fine-tuning steps before export [the run's fidelity]")
    export.add_argument("--threads", type=int, help="torch threads [all cores, fewer beside busy ones]")
    export.add_argument("--trust-factory", action="store_true",
                        help="import the model or data factory the run's run.json names, to rebuild the model "
                             "(code runs only with this consent)")
    add_view_commands(commands, quiet)
    return parser


def _search_options(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from autoprune.config import read_config_file

    options: dict[str, Any] = read_config_file(args.config) if args.config else {}
    for flag, (field, _, _) in SEARCH_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            options[field] = value
    if args.budget:
        options["budget"] = tuple(args.budget)
    if args.searcher_option:
        searcher_options = dict(options.get("searcher_options") or {})
        for item in args.searcher_option:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise UserError(f"--searcher-option {item!r} is not of the form key=value.")
            try:
                searcher_options[key.strip()] = yaml.safe_load(raw)
            except yaml.YAMLError:
                raise UserError(f"--searcher-option {item!r}: the value {raw!r} is not valid YAML "
                                "(a number, a word, or a list such as [10, 50, 200]).") from None
        options["searcher_options"] = searcher_options
    return options


def cmd_search(args: argparse.Namespace) -> int:
    from autoprune import api

    progress = not args.quiet
    if args.resume:
        settable = {f"--{field.replace('_', '-')}" for field in api.RESUME_SETTABLE}
        flags = ["--budget", "--config", "--run-dir", "--searcher-option",
                 *(f for f in SEARCH_FLAGS if f not in settable)]
        given = [flag for flag in flags if getattr(args, flag[2:].replace("-", "_")) not in (None, [])]
        if given:
            raise UserError(f"--resume continues a run with its own settings; drop {', '.join(given)} "
                            f"(only {', '.join(sorted(settable))} may change).")
        run = api.resume(args.resume, progress=progress, trust_factory=args.trust_factory,
                         **{field: getattr(args, field) for field in api.RESUME_SETTABLE})
    else:
        if args.trust_factory:
            raise UserError("--trust-factory goes with --resume (a new search imports the factories its own "
                            "flags name); drop it.")
        options = _search_options(args)
        if "progress" in options:
            raise UserError("progress is not an option of a search; -q hides the progress bar.")
        from_config = options.pop("run_dir", None)  # the flag wins, as for every option
        # decided here, so that an interrupt can name the run directory to resume
        args.run_dir = str(args.run_dir or from_config or api.default_run_dir())
        run = api.search(run_dir=args.run_dir, progress=progress, **options)
    _print_summary(run)
    return 0


def _print_summary(run: Any) -> None:
    trials = run.trials
    front = run.front
    stats = run.last_stats
    measurements = trials[trials["kind"] != "trial"] if not trials.empty else trials
    trials = trials[trials["kind"] == "trial"] if not trials.empty else trials
    ok = int((trials["status"] == "ok").sum()) if not trials.empty else 0
    print(f"\nrun directory: {run.path}")
    print(f"trials: {len(trials)} ({ok} ok, {len(trials) - ok} failed); "
          f"this session evaluated {stats.evaluated}, replayed {stats.replayed}; stopped by {stats.stopped_by}")
    if not measurements.empty:
        failed = int((measurements["status"] != "ok").sum())
        print(f"measurements: {len(measurements)} ({failed} failed), the searcher's probes: journaled, "
              "never on the front")
    for line in _report_lines(run.record.searcher_report):
        print(line)
    usage = run.record.sessions[-1].get("workers") if run.record.sessions else None
    if usage:
        print(f"workers: {usage['workers']} ({usage['executor']}), busy {usage['utilisation']:.0%} of the time; "
              f"{usage['retried']} evaluations retried, {usage['replaced']} workers replaced")
    budgets = ", ".join(run.config.budget)
    quality = run.quality
    print(f"dense model: {quality.label} {quality.format(run.dense[quality.metric])}, "
          f"{int(run.dense['flops']):,} FLOPs (MACs), {int(run.dense['params']):,} params; budget: {budgets}")
    _print_failures(trials)
    if front.empty:
        print("no trial within budget succeeded; the front is empty")
        return
    best = front.iloc[0]
    print(f"Pareto front: {_count(len(front), 'model')} (hypervolume {run.hypervolume:.4f}); best {quality.label} "
          f"{quality.format(best[quality.metric])} at {best['flops_ratio']:.3f} of the dense FLOPs "
          f"(trial {int(best['trial_id'])})")
    _print_latency(run, front)
    chosen = run.record.incumbent
    if chosen is not None:
        # a choice found long before the end says the search had stopped moving
        print(f"the searcher's choice: trial {chosen}, found {len(trials) - 1 - chosen} trials before the end "
              "(what export picks by default)")
    print(f"see the front:   autoprune front {run.path}")
    print(f"export a model:  autoprune export {run.path}   "
          f"(or --pick best, --pick TRIAL_ID, or constraints such as --pick '{_example_constraint(quality)}')")


def _report_lines(report: Any) -> list[str]:
    """The searcher's report (run.json ``searcher_report``): its ``summary`` sentences."""
    if not isinstance(report, dict):
        return []
    summary = report.get("summary")
    return [str(line) for line in summary] if isinstance(summary, list) else []


def _example_constraint(quality: Any) -> str:
    """A --pick example in the run's own quality metric."""
    return "accuracy>=0.9,best=flops" if quality.metric == "accuracy" else "perplexity<=20,best=params"


def _print_latency(run: Any, front: Any) -> None:
    """A latency budget is held on the latency model's prediction: say so, and how the
    front's measured latencies compare with it."""
    limit = run.limits.get("latency")
    if limit is None or front["latency_ms"].isna().all():
        return
    measured = front["latency_ms"]
    over = int((measured > limit).sum())
    print(f"latency budget: {limit:.3g} ms as predicted by the per-layer tables (dense: "
          f"{run.dense['predicted_latency_ms']:.3g} ms predicted, {run.dense['latency_ms']:.3g} ms measured); "
          f"front members measured {measured.min():.3g}-{measured.max():.3g} ms"
          + (f", {over} of {len(front)} above the budget" if over else ""))


def _count(n: int, noun: str) -> str:
    """``1 model``, ``2 models``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _print_failures(trials: Any) -> None:
    """Why trials failed, most frequent reason first (the journal holds each one's error)."""
    if trials.empty or "error" not in trials:
        return
    errors = trials.loc[trials["status"] != "ok", "error"].dropna()
    for message, n in errors.value_counts().head(3).items():
        print(f"{_count(int(n), 'trial')} failed: {message}")


def cmd_front(args: argparse.Namespace) -> int:
    import pandas as pd

    from autoprune.api import open_run

    if args.plot is not None:
        from autoprune.views.commands import plot_front

        plot_front(args.run_dir, args.plot)
    run = open_run(args.run_dir)
    table = run.trials if args.all else run.front
    if table.empty:
        print("no trials yet" if args.all else "the front is empty: no successful trial within budget yet")
        return 0
    quality = run.quality
    scores = [quality.metric, "loss"] + (["kl_to_dense"] if quality.metric != "accuracy" else [])
    columns = ["trial_id", "status", *scores, "flops_ratio", "flops", "params_ratio", "params", "latency_ms", "predicted_latency_ms",
               "decode_ms_per_token", "fidelity"]
    if args.all and "error" in table and table["error"].notna().any():
        columns.append("error")  # why a trial failed, last: it is the widest column
    shown = table[[c for c in columns if c in table]].copy()
    with pd.option_context("display.max_rows", None, "display.width", 160, "display.float_format", "{:.4f}".format):
        print(shown.to_string(index=False))
    what = (_count(len(shown), "trial") if args.all else
            f"{_count(len(shown), 'model')} on the Pareto front ({quality.label} "
            f"{'up' if quality.higher_is_better else 'down'}, FLOPs, params, latency down)")
    print(f"\n{what}; FLOPs are multiply-accumulates (MACs) per input; "
          f"latency: batch {run.config.latency_batch_size}, median ms where the trials ran")
    if not args.all:
        from autoprune.store.front import describe_reference, reference_point

        reference = reference_point(run.front, run.dense, quality)
        print(f"hypervolume {run.hypervolume:.4f} of {quality.label} error and cost ratios to the dense model, "
              f"up to the reference point: {describe_reference(reference, run.dense, quality)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autoprune.api import open_run

    run = open_run(args.run_dir, trust_factory=args.trust_factory)
    row = run.pick(args.pick)
    out = Path(args.out) if args.out else run.path / f"export-trial-{int(row['trial_id'])}"
    recipe = run.export(out, pick=int(row["trial_id"]), steps=args.steps, threads=args.threads,
                        export_format=args.export_format)
    m = recipe["metrics"]
    print(f"exported trial {recipe['trial_id']} to {out}")
    if run.quality.metric == "accuracy":
        print(f"  test accuracy {m['test_accuracy']:.4f} (dense {run.dense['test_accuracy']:.4f}); "
              f"held-out {m['val_accuracy']:.4f}")
    else:
        print(f"  test perplexity {m['test_perplexity']:.3f} (dense {recipe['dense_test']['perplexity']:.3f}); "
              f"held-out {m['perplexity']:.3f}, KL to dense {m['kl_to_dense']:.4f}")
    print(f"  FLOPs {m['flops']:,} MACs ({m['flops_ratio']:.3f} of dense), params {m['params']:,} ({m['params_ratio']:.3f})")
    onnx = recipe.get("onnx")
    if onnx:
        print(f"  ONNX: {out / onnx['file']}, onnxruntime output within {onnx['max_abs_diff']:.2g} of PyTorch's "
              f"(max abs difference on {onnx['checked_inputs']} test inputs); latency at batch "
              f"{onnx['latency_batch_size']}: onnxruntime {onnx['onnxruntime_latency_ms']:.3g} ms, PyTorch "
              f"{onnx['torch_latency_ms']:.3g} ms ({onnx['threads']} threads)")
    print(f"  load it with: python -c \"import autoprune; print(autoprune.load('{out}'))\"")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    handlers = {"search": cmd_search, "front": cmd_front, "export": cmd_export, **VIEW_HANDLERS}
    with handle_sigterm():  # a scheduler's, `docker stop`'s or `ray job stop`'s SIGTERM stops us as Ctrl-C does
        return _run_command(handlers[args.command], args)


def _run_command(handler: Any, args: argparse.Namespace) -> int:
    """Run one command, turning what a user can cause into one sentence and an exit status."""
    try:
        return handler(args)
    except UserError as exc:
        print(f"autoprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        resume = getattr(args, "run_dir", None) or getattr(args, "resume", None)
        started = args.command == "search" and resume and (Path(resume) / "run.json").is_file()
        # before the run directory exists (dense training, latency tables) there is nothing to resume
        hint = f"; resume with: autoprune search --resume {resume}" if started else ""
        if isinstance(exc, Terminated):
            print(f"autoprune: stopped by {exc.signal_name}{hint}", file=sys.stderr)
            return 128 + exc.signum
        print(f"autoprune: interrupted{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (`autoprune front RUN | head`): for front that is
        # the reader's choice; a search or export stopped by it says so where it still can
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush stays quiet
        if args.command == "front":
            return 0
        with contextlib.suppress(OSError):
            print("autoprune: stopped: the output pipe was closed", file=sys.stderr)
        return 141  # 128 + SIGPIPE, as a shell reports a program ended by a closed pipe
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # where no command turned it into a sentence of its own: nothing is half written (atomic writes)
        where = f" writing {exc.filename!r}" if exc.filename else ""
        print(f"autoprune: error: no space left on the device{where}; free some space and run the command again.",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
