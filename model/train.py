"""The trainer: `python -m model.train --run-dir RUN_DIR` (one process, or each worker under torchrun).

Reads the phase from `RUN_DIR/run.json` (or `--phase NAME [--set k=v]`, which writes run.json), and writes the
run contract of `bevctl.runs` from rank 0 (through `model.run_sink`): events.jsonl, the mmcv-style text log,
checkpoints, run.json status. `main()` builds the parts (`build_trainer`, from `model.builders`); `train()` is the
loop, epoch by epoch, calling `train_step()` for each batch.

Exit codes: 0 finished or stopped by SIGTERM/SIGINT (after saving), 1 failed (non-finite loss, a bug),
2 usage/input error (bad phase, data root, checkpoint keys), 3 environment unusable.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import random
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bevctl import __version__ as BEVCTL_VERSION
from bevctl import runs
from bevctl.errors import BevctlError, UsageError
from bevctl.phases import Phase
from model import builders
from model import checkpoint as ckpt
from model import distributed as dist_utils
from model.builders import Parts, build_parts, checkpoint_state, unwrap  # noqa: F401 (Parts, checkpoint_state: API)
from model.data.batch import to_device
from model.distributed import DistInfo
from model.run_sink import RunSink, late_sink

EXIT_FAILED = 1


@dataclass
class Trainer:
    """The built parts of one run and the loop's counters."""

    phase: Phase
    run_dir: Path
    info: DistInfo
    sink: RunSink
    stop: "StopFlag"
    parts: Parts
    model: torch.nn.Module
    loader: Any
    sampler: Any
    generator: torch.Generator
    val_loader: Any
    optimizer: torch.optim.Optimizer
    schedule: Any
    scaler: torch.amp.GradScaler
    iters_per_epoch: int
    total_iters: int
    start_epoch: int = 0
    skip_batches: int = 0
    global_step: int = 0
    nonfinite_in_row: int = 0
    overflow_steps: int = 0
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))  # step times (ETA)

    def stopping(self) -> bool:
        """Whether any rank was asked to stop (every rank gets the same answer)."""
        return dist_utils.any_true(bool(self.stop), self.info)


@dataclass
class StepResult:
    ok: bool  # the optimizer stepped (or fp16's scaler skipped an overflow, which is normal)
    loss: float
    grad_norm: float
    values: dict[str, float]  # the model's loss/... and stats/... outputs


# --------------------------------------------------------------------------------------------- the loop


def train(t: Trainer) -> int:
    tc = t.phase.train
    announce_start(t)
    for epoch in range(t.start_epoch + 1, tc.epochs + 1):
        it = begin_epoch(t, epoch)
        window: dict[str, list[float]] = collections.defaultdict(list)
        end = time.perf_counter()
        for batch in t.loader:
            it += 1
            batch = to_device(batch, t.info.device)
            data_time = time.perf_counter() - end
            lr = t.schedule.get_lr()  # this step's lr (logged like mmcv: the lr the step used)
            step = train_step(t, batch, epoch, it)
            if t.nonfinite_in_row >= tc.nonfinite_limit:
                return nonfinite_stop(t, epoch, it)
            step_time = time.perf_counter() - end
            t.recent.append(step_time)
            if step.ok:
                window["loss"].append(step.loss)
                window["grad_norm"].append(step.grad_norm)
                for k, v in step.values.items():
                    window[k].append(v)
            window["step_time"].append(step_time)
            window["data_time"].append(data_time)
            if it % tc.log_interval == 0 or it == t.iters_per_epoch:
                if window["loss"]:
                    log_train(t, window, epoch, it, lr)
                window.clear()
            if it < t.iters_per_epoch and t.stopping():
                save(t, "signal", epoch, it)
                name = signal.Signals(t.stop.signum).name if t.stop.signum else "signal"
                t.sink.end("stopped", 0, f"stopped by {name} at epoch {epoch} iter {it}; resume with resume=auto")
                return 0
            if it >= t.iters_per_epoch:
                break  # max_iters_per_epoch: never fetch a batch that will not be used
            end = time.perf_counter()
        if not end_epoch(t, epoch):
            t.sink.end("stopped", 0, f"stopped at the end of epoch {epoch}; resume with resume=auto")
            return 0
    t.sink.end("finished", 0, f"finished {tc.epochs} epochs ({t.global_step} steps)")
    return 0


def train_step(t: Trainer, batch: dict, epoch: int, it: int) -> StepResult:
    """Forward (autocast for bf16/fp16), backward through the loss scaler, clip, step; a non-finite loss or
    gradient (other than an fp16 overflow, which the scaler handles) skips the step on every rank."""
    tc, oc = t.phase.train, t.phase.optim
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.precision)
    with torch.autocast(t.info.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        outputs = t.model(batch)
    loss = sum(v for k, v in outputs.items() if k.startswith("loss/"))
    bad = dist_utils.any_true(not bool(torch.isfinite(loss)), t.info)
    grad_norm = float("nan")
    if not bad:
        t.scaler.scale(loss).backward()
        t.scaler.unscale_(t.optimizer)
        params = [p for p in t.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, oc.grad_clip or float("inf")))
        if not math.isfinite(grad_norm):
            if t.scaler.is_enabled():
                t.overflow_steps += 1  # the scaler skips this step and lowers its scale: normal
            else:
                bad = True
        if not bad:
            t.scaler.step(t.optimizer)
            t.scaler.update()
    t.optimizer.zero_grad(set_to_none=True)
    if bad:
        t.nonfinite_in_row += 1
        t.sink.warning(f"Epoch [{epoch}][{it}/{t.iters_per_epoch}] non-finite loss/grad ({t.nonfinite_in_row} in a row): "
                       "step skipped")
        if t.nonfinite_in_row == 1:
            t.sink.emit("alert", level="warning", message=f"non-finite loss/grad at epoch {epoch} iter {it}: step skipped",
                        metric="loss", value=float(loss.detach()))
        return StepResult(False, float("nan"), grad_norm, {})
    t.nonfinite_in_row = 0
    t.global_step += 1
    t.schedule.step()
    values = {k: float(v.detach()) for k, v in outputs.items() if k.startswith(("loss/", "stats/"))}
    return StepResult(True, float(loss.detach()), grad_norm, values)


def begin_epoch(t: Trainer, epoch: int) -> int:
    """Set the epoch's data order and augmentation; returns the batches already done (a resumed epoch)."""
    t.model.train()
    skip = t.skip_batches if epoch == t.start_epoch + 1 else 0
    t.sampler.set_epoch(epoch - 1, skip=skip * t.phase.train.batch_size)
    if hasattr(t.parts.train_set, "set_epoch"):  # augmentation keyed on (seed, epoch, index): exact resume
        t.parts.train_set.set_epoch(epoch - 1)
    t.generator.manual_seed(t.phase.train.seed * 100_003 + epoch)  # worker seeds: per epoch, never the global RNG
    return skip


def end_epoch(t: Trainer, epoch: int) -> bool:
    """Checkpoint and evaluate as the phase says; False when the run should stop here."""
    tc = t.phase.train
    if t.overflow_steps:
        t.sink.info(f"fp16: {t.overflow_steps} steps skipped by the grad scaler so far (overflow)")
    final = epoch == tc.epochs
    evaluate_now = t.val_loader is not None and (epoch % tc.eval_interval == 0 or final)
    if evaluate_now and tc.precise_bn_batches and not t.stopping():
        # Before the save, so the checkpoint holds the statistics the evaluation used.
        from model.precise_bn import recompute_bn_stats

        recompute_bn_stats(unwrap(t.model), t.loader, tc.precise_bn_batches, t.info)
    if epoch % tc.checkpoint_interval == 0 or final:
        save(t, "final" if final else "epoch", epoch, t.iters_per_epoch, epoch_file=epoch)
    stopping = t.stopping()
    if stopping and t.val_loader is not None:
        t.sink.info(f"Evaluation of epoch {epoch} skipped: stopping")
    elif evaluate_now:
        from model.evaluate import evaluate

        result = evaluate(unwrap(t.model), t.val_loader, t.info, phase=t.phase, run_dir=t.run_dir,
                          should_stop=t.stopping)
        if result is not None and result.metrics:
            t.sink.val(epoch, result)
    if not final and (stopping or t.stopping()):
        if not epoch % tc.checkpoint_interval == 0:
            save(t, "signal", epoch, t.iters_per_epoch)
        return False
    return True


# --------------------------------------------------------------------------------------------- output


def announce_start(t: Trainer) -> None:
    tc, info = t.phase.train, t.info
    t.sink.emit("run_start", phase=t.phase.name, world_size=info.world_size, epochs=tc.epochs,
                iters_per_epoch=t.iters_per_epoch, start_epoch=t.start_epoch + 1, start_iter=t.skip_batches,
                precision=tc.precision, model=t.phase.model.config, gca=t.phase.model.gca, device=str(info.device))
    t.sink.info(f"Start training: {tc.epochs} epochs x {t.iters_per_epoch} iters, world size {info.world_size}, "
                f"device {info.device}, precision {tc.precision}")


def log_train(t: Trainer, window: dict[str, list[float]], epoch: int, it: int, lr: float) -> None:
    """One `train` event and one mmcv text line: the window's means over steps (and ranks), ETA from recent steps."""
    means = dist_utils.mean_dict({k: sum(v) / len(v) for k, v in window.items() if v}, t.info)
    step_time = means.pop("step_time", 0.0)
    data_time = means.pop("data_time", 0.0)
    metrics = {k: means[k] for k in sorted(means) if k.startswith(("loss/", "stats/"))}
    for k in ("loss", "grad_norm"):
        if k in means:
            metrics[k] = means[k]
    mem = memory_mb(t.info.device)
    eta = (sum(t.recent) / max(len(t.recent), 1)) * max(t.total_iters - t.global_step, 0)
    t.sink.emit("train", epoch=epoch, iter=it, iters_per_epoch=t.iters_per_epoch, global_step=t.global_step, lr=lr,
                step_time=step_time, data_time=data_time, memory=mem, **metrics)
    t.sink.info(runs.format_train_line(epoch, it, t.iters_per_epoch, lr, eta, step_time, data_time, mem, metrics))


def log_gca(model: torch.nn.Module, mode: str, sink: RunSink) -> None:
    """The seed's verification lines, verbatim, so `grep "Task-specific"` keeps working."""
    counts = getattr(model, "gca_params", lambda: {})()
    if mode == "none" or not counts:
        return
    sink.info("[BEVFusion] ✨✨ Task-specific GCA mode enabled ✨✨" if mode == "task"
              else "[BEVFusion] ✨✨ Shared GCA mode enabled ✨✨")
    for task, n in counts.items():
        sink.info(f"[{task}] GCA: params: {n:,}")
    total = sum(counts.values())
    sink.info(f"Total: {total:,}")
    sink.emit("gca_enabled", mode=mode, params=dict(counts), total=total)


def save(t: Trainer, reason: str, epoch: int, it: int, epoch_file: int | None = None) -> None:
    """A checkpoint of every rank's RNG and rank 0's weights, optimizer, schedule, scaler and data position."""
    rng = dist_utils.gather_objects(ckpt.rng_state(), t.info)
    if t.info.is_main:
        tc = t.phase.train
        done = it < t.iters_per_epoch
        data_state = {"epoch": epoch - 1 if done else epoch, "samples_done": it * tc.batch_size * t.info.world_size
                      if done else 0, "seed": tc.seed, "world_size": t.info.world_size}
        meta = {"epoch": epoch, "iter": it, "global_step": t.global_step, "bevctl_version": BEVCTL_VERSION,
                "torch_version": str(torch.__version__), "time": time.time(), "phase": t.phase.name,
                "model_config": t.phase.model.config, "gca": t.phase.model.gca, **ckpt.checkpoint_meta(t.model)}
        state = checkpoint_state(t.model, t.optimizer, t.schedule, t.scaler, meta=meta, rng=rng, data_state=data_state)
        path = ckpt.save_run_checkpoint(t.run_dir, state, epoch_file, tc.max_keep)
        t.sink.info(f"Saving checkpoint at {epoch} epochs" if epoch_file
                    else f"Saved checkpoint {path.name} at epoch {epoch} iter {it}")
        t.sink.emit("checkpoint_saved", path=str(path), epoch=epoch, iter=it, global_step=t.global_step, reason=reason)
    dist_utils.barrier(t.info)


def nonfinite_stop(t: Trainer, epoch: int, it: int) -> int:
    message = (f"loss or gradient non-finite for {t.phase.train.nonfinite_limit} steps in a row at epoch {epoch} "
               f"iter {it}")
    if all(bool(torch.isfinite(p).all()) for p in unwrap(t.model).parameters()):
        # Skipped steps never touched the weights: the current state is the last good one.
        save(t, "nonfinite", epoch, it)
        message += "; last good state saved to latest.pth"
    else:
        message += "; the weights themselves are non-finite, not saved (the last epoch checkpoint is the last good state)"
    t.sink.emit("alert", level="error", message=message, metric="loss", value=float("nan"))
    t.sink.error(message)
    t.sink.end("failed", EXIT_FAILED, message)
    return EXIT_FAILED


# --------------------------------------------------------------------------------------------- set-up


class StopFlag:
    """SIGTERM/SIGINT set a flag the loop checks after each step; a watchdog ends the process after the grace."""

    def __init__(self, grace_seconds: float, on_timeout: Callable[[], None]):
        self.signum: int | None = None
        self.grace = grace_seconds
        self.on_timeout = on_timeout
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            timer = threading.Timer(self.grace, self.on_timeout)
            timer.daemon = True
            timer.start()

    def __bool__(self) -> bool:
        return self.signum is not None


def build_trainer(phase: Phase, run_dir: Path, info: DistInfo, sink: RunSink, parts_builder=build_parts) -> Trainer:
    """Model, data, loaders, weights, optimizer and schedule of the phase; resumed when it says so."""
    tc = phase.train
    # Installed first: a stop during set-up is honoured after the first step instead of killing the process bare.
    stop = StopFlag(tc.grace_seconds, lambda: _grace_exceeded(sink, tc.grace_seconds))
    seed_all(tc.seed)  # same seed everywhere for identical initial weights; ranks diverge below for augmentation
    parts = parts_builder(phase, info)
    model = parts.model.to(info.device)
    log_gca(model, phase.model.gca, sink)
    loader, sampler, generator = builders.train_loader(parts, phase, info)
    iters_per_epoch = min(len(loader), tc.max_iters_per_epoch or len(loader))
    total_iters = tc.epochs * iters_per_epoch
    val_loader = None
    if parts.val_set is not None and tc.eval_interval:
        val_loader = builders.val_loader(parts.val_set, phase, info, parts.collate)
    resume = builders.resume_path(phase, run_dir)
    if resume is None:
        builders.load_weights(model, phase, sink)
    optimizer, schedule, scaler = builders.build_optimizer(model, phase, info, total_iters, iters_per_epoch)
    t = Trainer(phase, run_dir, info, sink, stop, parts, model, loader, sampler, generator, val_loader, optimizer,
                schedule, scaler, iters_per_epoch, total_iters)
    seed_all(tc.seed + 1000 * info.rank)
    if resume is not None:
        resume_from(t, resume)
    if info.distributed:
        t.model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    if info.is_main:
        ckpt.remove_stale_temps(run_dir)
    return t


def resume_from(t: Trainer, path: Path) -> None:
    """Weights, optimizer, schedule, scaler, RNG and the position in the epoch of a run checkpoint."""
    state = ckpt.load_file(path)
    report = ckpt.partial_load(t.model, ckpt.extract_state_dict(state), path=str(path), how="resume")
    builders.report_load(report, t.sink)
    t.optimizer.load_state_dict(state["optimizer"])
    t.schedule.load_state_dict(state["scheduler"])
    t.scaler.load_state_dict(state["scaler"])
    ds = state["data_state"]
    t.start_epoch = int(ds["epoch"])
    # The order of an epoch depends only on (seed, epoch), so skipping consumed samples resumes it exactly.
    t.skip_batches = int(ds["samples_done"]) // (t.phase.train.batch_size * t.info.world_size)
    if t.skip_batches >= t.iters_per_epoch:
        t.start_epoch, t.skip_batches = t.start_epoch + 1, 0
    t.global_step = int(state["meta"]["global_step"])
    rng = state["rng"]
    ckpt.set_rng_state(rng[t.info.rank] if t.info.rank < len(rng) else rng[0])
    t.sink.info(f"resumed from {path}: epoch {t.start_epoch + 1}, iter {t.skip_batches}, step {t.global_step}")


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def memory_mb(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device) / 2**20)
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB


def _grace_exceeded(sink: RunSink, grace: float) -> None:
    message = f"could not finish the step and save within train.grace_seconds={grace:g}; exiting without saving"
    try:
        sink.error(message)
        sink.end("failed", EXIT_FAILED, message)
    finally:
        os._exit(EXIT_FAILED)


# --------------------------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True, type=Path, help="the run directory (its run.json holds the phase)")
    p.add_argument("--phase", help="development: a phase name or YAML; writes RUN_DIR/run.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a phase value (with --phase)")
    p.add_argument("--resume", help="auto or a checkpoint path; overrides the phase (and drops load_from)")
    return p.parse_args(argv)


def load_run_phase(args: argparse.Namespace, is_main: bool) -> Phase:
    from bevctl.phases import load_phase, phase_from_dict

    run_dir: Path = args.run_dir
    if args.phase:
        phase = load_phase(args.phase, args.overrides)
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            config = phase.model_dump(mode="json")
            if runs.read_manifest(run_dir):
                runs.update_manifest(run_dir, phase=phase.name, config=config)
            else:
                manifest = runs.new_manifest(run_dir.name, phase.name, config, command=sys.argv, pid=os.getpid())
                runs.write_manifest(run_dir, manifest)
    else:
        manifest = runs.read_manifest(run_dir)
        if not manifest or not isinstance(manifest.get("config"), dict):
            raise UsageError(f"{run_dir / runs.MANIFEST} is missing or has no config",
                             fix="start runs with `bevctl start`, or pass --phase NAME")
        phase = phase_from_dict(manifest["config"])
    if args.resume:
        phase = phase.model_copy(update={"resume": args.resume, "load_from": None})
    return phase


def main(argv: list[str] | None = None, parts_builder=build_parts) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    sink: RunSink | None = None
    info: DistInfo | None = None
    code = 0
    try:
        lock = take_run_lock(args) if rank == 0 else None
    except (BevctlError, OSError) as exc:  # another run's directory, or none to be had: write nothing into it
        print(f"error: {exc.one_line() if isinstance(exc, BevctlError) else f'cannot use {args.run_dir}: {exc}'}",
              file=sys.stderr, flush=True)
        return exc.code if isinstance(exc, BevctlError) else 2
    try:
        phase = load_run_phase(args, rank == 0)
        sink = RunSink(args.run_dir, main=rank == 0)
        where = (runs.read_manifest(args.run_dir) or {}).get("where")
        if lock is not None and where not in ("container", "slurm"):
            # started by hand on this host: this process is the one `bevctl stop` checks and signals
            sink.manifest(status="running", exit_code=None, ended_at=None, pid=os.getpid(), supervisor=None,
                          trainer_pid=os.getpid(), trainer=runs.process_identity(os.getpid()))
        else:
            sink.manifest(status="running", exit_code=None, ended_at=None,
                          **({} if (runs.read_manifest(args.run_dir) or {}).get("pid") else {"pid": os.getpid()}))
        info = dist_utils.init(phase.train.device)
        code = train(build_trainer(phase, args.run_dir, info, sink, parts_builder))
        # Ranks leave together: a gloo rank tearing down while rank 0 still writes its last files can abort.
        dist_utils.barrier(info)
    except BevctlError as exc:
        code = exc.code
        if rank == 0:
            print(f"error: {exc.one_line()}", file=sys.stderr, flush=True)
        sink = sink or late_sink(args.run_dir, rank)
        if sink:
            sink.error(exc.one_line())
            sink.end("failed", code, exc.one_line())
    except Exception as exc:  # a bug: keep the traceback, in the log and on stderr
        code = EXIT_FAILED
        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)
        sink = sink or late_sink(args.run_dir, rank)
        if sink:
            sink.error(trace)
            sink.end("failed", code, f"{type(exc).__name__}: {exc}")
    finally:
        if sink:
            sink.close()
        dist_utils.cleanup()
        if lock is not None:
            lock.release()
    return code


def take_run_lock(args: argparse.Namespace) -> "runs.RunLock | None":
    """Rank 0's hold on the run directory (see `bevctl.runs.hold_for_trainer`): None under `bevctl start`, whose
    supervisor holds it, or when the directory does not exist yet and nothing asks to create it."""
    if args.phase:
        args.run_dir.mkdir(parents=True, exist_ok=True)
    if not args.run_dir.is_dir():
        return None  # load_run_phase says what is missing
    return runs.hold_for_trainer(args.run_dir)


if __name__ == "__main__":
    sys.exit(main())
