"""Getting a Ray instance to run workers on: start a local one, or join a cluster.

Three ways a driver can hold Ray, and what closing it means for each:

- *started*: no ``address`` was given, so we start a private local instance (dashboard
  off) sized for the workers asked for; closing shuts it down.
- *joined*: ``address`` (``auto`` or ``HOST:PORT``) names a running cluster; we connect
  and never start anything; closing kills only our actors and disconnects.
- *borrowed*: this process is already connected (a notebook, a test fixture, a program
  embedding autoprune); we use that connection and leave it open.

How many workers fit, and with which resources each, is decided here too: one worker
per GPU (or per ``gpus_per_worker`` share of one), else one per ``threads`` CPUs (one
by default); every worker reserves ``threads`` CPUs and runs torch with that many threads.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from autoprune.errors import UserError
from autoprune.threads import busy_cores, local_cpus, others_running

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'autoprune[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`UserError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed; install it with: {INSTALL_HINT}.") from None
    return ray


@dataclass(frozen=True)
class RaySession:
    """How this driver holds Ray, and the shape of the workers to create."""

    mode: str  # "started", "joined" or "borrowed"
    address: str  # the GCS address of the instance
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float  # 0.0: CPU workers
    resources: dict[str, float]  # the cluster's total resources when we connected
    #: the watcher that ends this instance's processes if the driver dies (started mode only)
    reaper: Any = field(default=None, compare=False, repr=False)

    @property
    def owns_connection(self) -> bool:
        """Whether :meth:`RayExecutor.close` should call ``ray.shutdown``."""
        return self.mode in ("started", "joined")


def local_gpus() -> int:
    """CUDA devices torch sees on this machine."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def connect(*, workers: int | None, address: str | None, gpus_per_worker: float | None,
            threads: int | None = None) -> RaySession:
    """Start or join Ray (see the module docstring) and decide the workers' shape; each
    worker reserves ``threads`` CPUs (default 1) and runs torch with that many threads."""
    ray = import_ray()
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise UserError(f"threads must be a whole number >= 1, got {threads!r}.")
    threads = threads or 1
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise UserError(f"workers must be a whole number >= 1, got {workers!r}.")
    if gpus_per_worker is not None and not (isinstance(gpus_per_worker, (int, float)) and gpus_per_worker > 0):
        raise UserError(f"gpus_per_worker must be a positive number such as 0.5 or 1, got {gpus_per_worker!r}.")
    if address:
        check_address(address)  # also when borrowing a connection: an address nobody answers at is a mistake
    if ray.is_initialized():
        mode = "borrowed"
        if address:
            logger.warning("this process is connected to Ray already; using that connection, not --address %s",
                           address)
    elif address:
        mode = "joined"
        try:
            with keep_sigterm_handler():
                ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(
                f"could not join the Ray cluster at --address {address!r} ({type(exc).__name__}: {exc}); start one "
                "with `ray start --head`, or leave out --address to start a local Ray instance."
            ) from None
    reaper = None
    if not ray.is_initialized() and not address:
        from autoprune.executors.ray_reaper import Reaper

        mode = "started"
        reaper = Reaper()  # before Ray starts: it notes every process of the instance
        try:
            _start_local(ray, workers=workers, gpus_per_worker=gpus_per_worker, threads=threads)
        except BaseException:
            reaper.close()
            raise
    try:
        session = _shape(ray, mode=mode, workers=workers, gpus_per_worker=gpus_per_worker, threads=threads)
    except UserError:
        if mode != "borrowed":
            ray.shutdown()
        if reaper is not None:
            reaper.close()
        raise
    return RaySession(**{**session.__dict__, "reaper": reaper})


@contextmanager
def keep_sigterm_handler() -> Iterator[None]:
    """Keep this process's SIGTERM handler across ``ray.init``, which replaces it with one
    that exits at once: a SIGTERM is then handled like Ctrl-C (:mod:`autoprune.interrupts`)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto``."""
    if address == "auto":
        return None
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--address must be auto or HOST:PORT of a Ray head (e.g. 10.0.0.5:6379), got {address!r}.")
    return host, int(port)


def check_address(address: str, *, reachable: bool = True, timeout: float = 10.0) -> None:
    """Refuse a malformed ``--address``, and with ``reachable`` one where nothing answers
    (at once: Ray itself keeps retrying for minutes). Cheap; callers may check early."""
    target = _host_port(address)
    if target is None or not reachable:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"no Ray cluster answers at --address {address!r} ({exc.strerror or exc}); check the head's "
                        "address and port (`ray status` on the head prints it), or use --address auto on a node "
                        "of the cluster.") from None


def check_local_gpus(gpus_per_worker: float | None) -> None:
    """Refuse ``--gpus-per-worker`` for a local Ray instance on a machine without CUDA
    (cheap; called before anything slow, and again when the instance starts)."""
    if gpus_per_worker and not local_gpus():
        raise UserError(f"--gpus-per-worker {gpus_per_worker} asks for GPUs, but torch sees no CUDA device on this "
                        "machine; leave it out to run one worker per CPU.")


def _start_local(ray: Any, *, workers: int | None, gpus_per_worker: float | None, threads: int) -> None:
    check_local_gpus(gpus_per_worker)
    cpus, gpus = local_cpus(), local_gpus()
    if gpus:
        share = gpus_per_worker or 1.0
        wanted = workers or max(1, int(gpus / share + 1e-9))
        num_cpus = max(cpus, wanted * threads)
    else:
        # a CPU worker reserves `threads` logical CPUs: size the instance so every asked worker
        # fits, even more workers than cores (workers that wait on I/O or sleep still scale)
        num_cpus = workers * threads if workers else _free_cpus(cpus, threads)
        if workers and num_cpus > cpus:
            logger.warning("%d workers of %d thread%s share this machine's %d cores: each evaluation runs slower "
                           "than it would alone; --workers %d fills the cores", workers, threads,
                           "" if threads == 1 else "s", cpus, max(1, cpus // threads))
    with keep_sigterm_handler():
        _init_local(ray, num_cpus=num_cpus, gpus=gpus)
    logger.info("started a local Ray instance with %d CPUs and %d GPUs", num_cpus, gpus)


#: Ray starts worker processes at nice 15 unless told otherwise. In a private instance the
#: workers do the run's work while the driver only waits, so at nice 15 any other program on
#: the machine (a second study, a build) takes their cores and the run crawls.
WORKER_NICENESS_VARIABLE = "RAY_worker_niceness"


@contextmanager
def _workers_at_normal_priority() -> Iterator[None]:
    """Start the instance with ``RAY_worker_niceness=0`` unless the user chose a value; the
    variable is read by the processes ``ray.init`` starts, and restored here afterwards."""
    if WORKER_NICENESS_VARIABLE in os.environ:
        yield
        return
    os.environ[WORKER_NICENESS_VARIABLE] = "0"
    try:
        yield
    finally:
        os.environ.pop(WORKER_NICENESS_VARIABLE, None)


def _init_local(ray: Any, *, num_cpus: int, gpus: int) -> None:
    with _workers_at_normal_priority():
        _init_local_instance(ray, num_cpus=num_cpus, gpus=gpus)


def _init_local_instance(ray: Any, *, num_cpus: int, gpus: int) -> None:
    ray.init(
        address="local",
        num_cpus=num_cpus,
        num_gpus=gpus,
        include_dashboard=False,
        # honoured on macOS and Windows; on Linux, Ray (2.60) replaces a loopback node address
        # with the machine's routable one, and its services, listening on every interface,
        # rely on token authentication (on by default) to keep others out
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
    )


def _free_cpus(cpus: int, threads: int) -> int:
    """CPUs for the workers of a private instance when the user named no count: the cores
    other programs leave free (a worker on a busy core slows down many times, as a local
    search beside busy cores does; see threads.py), and at least one worker's worth."""
    busy = busy_cores(others_running() or 0.0)
    if busy:
        logger.warning("other programs keep about %d of this machine's %d cores busy: starting Ray workers on "
                       "the other %d; pass --workers to choose", busy, cpus, max(threads, cpus - busy))
    return max(threads, cpus - busy)


def _shape(ray: Any, *, mode: str, workers: int | None, gpus_per_worker: float | None,
           threads: int = 1) -> RaySession:
    resources = {k: float(v) for k, v in ray.cluster_resources().items()
                 if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    where = "this machine" if mode == "started" else "the Ray cluster"
    if gpus_per_worker and not gpus:
        raise UserError(f"--gpus-per-worker {gpus_per_worker} asks for GPUs, but {where} has none; "
                        "leave it out to run one worker per CPU.")
    if gpus:
        share = float(gpus_per_worker or 1.0)
        if share > gpus:
            raise UserError(f"--gpus-per-worker {share} is more than the {gpus:g} GPUs of {where}.")
        fits = int(gpus / share + 1e-9)
    else:
        share, fits = 0.0, int(cpus // threads)
    if workers is None:
        if fits < 1 and cpus >= 1:
            raise UserError(f"{where} has {cpus:g} CPUs, fewer than the {threads} --threads one worker reserves; "
                            "lower --threads.")
        if fits < 1:
            raise UserError(f"{where} has no CPU or GPU to run a worker on ({resources}); pass --workers "
                            "and add nodes, or leave out --address to start a local Ray instance.")
        workers = fits
    elif workers > fits:
        logger.warning("%d workers asked for, but %s has room for %d now; the others start when resources free up",
                       workers, where, fits)
    address = ray.get_runtime_context().gcs_address
    # `threads` CPUs per worker, GPU workers too (they still load batches and drive the GPU)
    return RaySession(mode=mode, address=address, workers=workers, cpus_per_worker=float(threads),
                      gpus_per_worker=share, resources=resources)
