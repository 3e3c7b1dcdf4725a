"""The trainer: `python -m model.train --run-dir RUN_DIR` (one process, or each worker under torchrun).

Reads the phase from `RUN_DIR/run.json` (or `--phase NAME [--set k=v]`, which writes run.json), and writes the
run contract of `bevctl.runs` from rank 0: events.jsonl, the mmcv-style text log, checkpoints, run.json status.
The loop below reads top to bottom: set-up, weights, optimizer, resume, then epochs of steps.

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
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from bevctl import __version__ as BEVCTL_VERSION
from bevctl import runs
from bevctl.errors import BevctlError, UsageError
from model import checkpoint as ckpt
from model import distributed as dist_utils
from model.distributed import DistInfo
from model.schedule import LRSchedule, ScheduleSpec

EXIT_FAILED = 1


# --------------------------------------------------------------------------------------------- run output


class RunSink:
    """Events, text log and run.json, written by rank 0 only; every other rank's calls are no-ops."""

    def __init__(self, run_dir: Path, main: bool, echo: bool = True):
        self.run_dir = run_dir
        self.main = main
        self.events = runs.EventWriter(run_dir / runs.EVENTS) if main else None
        self.log = runs.TextLog(run_dir / runs.log_file_name(), echo=echo) if main else None

    def emit(self, kind: str, **fields: Any) -> None:
        if self.events:
            self.events.emit(kind, **fields)

    def info(self, message: str) -> None:
        if self.log:
            self.log.info(message)

    def warning(self, message: str) -> None:
        if self.log:
            self.log.warning(message)

    def error(self, message: str) -> None:
        if self.log:
            self.log.error(message)

    def manifest(self, **changes: Any) -> None:
        if self.main:
            runs.update_manifest(self.run_dir, **changes)

    def end(self, status: str, exit_code: int, message: str) -> None:
        if not self.main:
            return
        self.emit("run_end", status=status, exit_code=exit_code, message=message)
        self.manifest(status=status, exit_code=exit_code, ended_at=time.time())

    def close(self) -> None:
        for f in (self.events, self.log):
            if f:
                f.close()


# --------------------------------------------------------------------------------------------- builders


@dataclass
class Parts:
    """What the loop needs from the model and data packages. Tests pass stand-ins through `build_parts`."""

    model: torch.nn.Module
    model_config: Any
    train_set: Dataset
    val_set: Dataset | None
    collate: Callable
    evaluate: Callable | None = None  # (model, loader, info, sink, epoch, should_stop) -> metrics | None
    extra: dict = field(default_factory=dict)


def prepare_data(phase, model_config, info: DistInfo) -> None:
    """Generate the synthetic dataset once (rank 0) when the phase asks for it; the others wait for it."""
    if not phase.data.synthetic:
        return
    error = None
    if info.is_main:
        try:
            from model.data.synth import ensure_dataset

            ensure_dataset(
                phase.data.root,
                version=phase.data.version,
                scenes=phase.data.synth.scenes,
                samples_per_scene=phase.data.synth.samples_per_scene,
                seed=phase.data.synth.seed,
                sweeps=phase.data.sweeps,
                config=model_config,
            )
        except BevctlError as exc:
            error = exc.one_line()
    # Rank 0's failure reaches every rank, so nobody waits at a barrier for a dataset that never comes.
    error = dist_utils.broadcast_object(error, info)
    if error:
        raise UsageError(error)


def build_parts(phase, info: DistInfo) -> Parts:
    """The bundled BEVFusion and the nuScenes-format data of the phase."""
    from model.bevfusion import build_model
    from model.config import get_config
    from model import data as data_pkg

    cfg = get_config(phase.model.config, gca=phase.model.gca, heads=tuple(phase.model.heads))
    model = build_model(cfg, device="cpu")
    prepare_data(phase, cfg, info)
    train_set = data_pkg.build_dataset(cfg, phase.data, split=phase.data.train_split, train=True, seed=phase.train.seed)
    val_set = data_pkg.build_dataset(cfg, phase.data, split=phase.data.val_split, train=False)
    from model.evaluate import evaluate

    return Parts(model, cfg, train_set, val_set, data_pkg.collate, evaluate=evaluate)


# --------------------------------------------------------------------------------------------- data order


class ResumableSampler(DistributedSampler):
    """DistributedSampler (seeded per epoch) that can start part-way through an epoch's order."""

    def __init__(self, dataset, info: DistInfo, seed: int, shuffle: bool = True):
        super().__init__(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        order = list(super().__iter__())
        return iter(order[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def _quiet_worker(worker_id: int) -> None:
    # A stop signal goes to the whole process group; workers ignore it so the main process can finish the
    # step and save. Their RNGs are seeded by the DataLoader from its per-epoch generator.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Several workers share few cores with the main process: no thread pools inside them.
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def make_loader(dataset, sampler, batch_size: int, workers: int, collate, generator=None) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_quiet_worker if workers else None,
        generator=generator,
        persistent_workers=False,
    )


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: (v if k == "metas" else to_device(v, device)) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


# --------------------------------------------------------------------------------------------- helpers


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def memory_mb(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device) / 2**20)
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def log_gca(model: torch.nn.Module, mode: str, sink: RunSink) -> None:
    """The seed's verification lines, verbatim, so `grep "Task-specific"` keeps working."""
    counts = getattr(model, "gca_params", lambda: {})()
    if mode == "none" or not counts:
        return
    if mode == "task":
        sink.info("[BEVFusion] ✨✨ Task-specific GCA mode enabled ✨✨")
    else:
        sink.info("[BEVFusion] ✨✨ Shared GCA mode enabled ✨✨")
    for task, n in counts.items():
        sink.info(f"[{task}] GCA: params: {n:,}")
    total = sum(counts.values())
    sink.info(f"Total: {total:,}")
    sink.emit("gca_enabled", mode=mode, params=dict(counts), total=total)


def load_weights(model: torch.nn.Module, phase, sink: RunSink) -> None:
    """`load_from` (whole model, partial) then `pretrained` module files not already covered by it."""
    covered: set[str] = set()
    if phase.load_from:
        state = ckpt.extract_state_dict(ckpt.load_file(phase.load_from))
        report = ckpt.partial_load(model, state, path=phase.load_from, how="load_from", expect_missing=phase.expect_missing)
        _report(report, sink)
        covered = {ckpt.module_group(k) for k in report.matched}
    for prefix, path in phase.pretrained.items():
        if any(g == prefix or g.startswith(prefix + ".") for g in covered):
            sink.info(f"pretrained {prefix}: skipped {path}, load_from already covers {prefix}")
            continue
        state = ckpt.extract_state_dict(ckpt.load_file(path))
        report = ckpt.partial_load(model, state, path=path, how=f"pretrained:{prefix}", prefix=prefix)
        _report(report, sink)


def _report(report: ckpt.LoadReport, sink: RunSink) -> None:
    for line in report.log_lines():
        sink.info(line)
    sink.emit("checkpoint_loaded", **report.event())
    if not report.ok:
        raise UsageError(
            report.failure(),
            fix="add the globs to expect_missing if those modules are new, or point load_from at the right file",
        )


def checkpoint_state(model, optimizer, schedule, scaler, *, meta: dict, rng: list, data_state: dict) -> dict:
    sd = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    return {
        "meta": meta,
        "state_dict": sd,
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "data_state": data_state,
    }


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


# --------------------------------------------------------------------------------------------- the loop


def train(phase, run_dir: Path, info: DistInfo, sink: RunSink, parts_builder=build_parts) -> int:
    tc, oc = phase.train, phase.optim
    device = info.device
    # Installed first: a stop during set-up is honoured after the first step instead of killing the process bare.
    stop = StopFlag(tc.grace_seconds, lambda: _grace_exceeded(sink, tc.grace_seconds))
    # Same seed everywhere for identical initial weights; ranks diverge below for data augmentation.
    seed_all(tc.seed)
    parts = parts_builder(phase, info)
    model = parts.model.to(device)
    log_gca(model, phase.model.gca, sink)

    # ---- data
    sampler = ResumableSampler(parts.train_set, info, seed=tc.seed)
    generator = torch.Generator()
    loader = make_loader(parts.train_set, sampler, tc.batch_size, phase.data.workers, parts.collate, generator)
    iters_per_epoch = len(loader)
    if tc.max_iters_per_epoch:
        iters_per_epoch = min(iters_per_epoch, tc.max_iters_per_epoch)
    total_iters = tc.epochs * iters_per_epoch
    val_loader = None
    if parts.val_set is not None and parts.evaluate is not None and tc.eval_interval:
        val_sampler = DistributedSampler(parts.val_set, num_replicas=info.world_size, rank=info.rank, shuffle=False)
        # Its own generator: creating a loader iterator must not draw from the global RNG (exact resume).
        val_loader = make_loader(parts.val_set, val_sampler, 1, phase.data.workers, parts.collate, torch.Generator())

    # ---- weights, optimizer, schedule, precision
    resume_path = _resume_path(phase, run_dir)
    if resume_path is None:
        load_weights(model, phase, sink)
    optimizer = torch.optim.AdamW(model.parameters(), lr=oc.lr, weight_decay=oc.weight_decay)
    schedule = LRSchedule(optimizer, ScheduleSpec.from_optim(oc, total_iters))
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.precision)

    start_epoch, skip_batches, global_step = 0, 0, 0
    seed_all(tc.seed + 1000 * info.rank)
    if resume_path is not None:
        state = ckpt.load_file(resume_path)
        report = ckpt.partial_load(model, ckpt.extract_state_dict(state), path=str(resume_path), how="resume")
        _report(report, sink)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        ds = state["data_state"]
        start_epoch = int(ds["epoch"])
        # The order of an epoch depends only on (seed, epoch), so skipping consumed samples resumes it exactly.
        skip_batches = int(ds["samples_done"]) // (tc.batch_size * info.world_size)
        if skip_batches >= iters_per_epoch:
            start_epoch, skip_batches = start_epoch + 1, 0
        global_step = int(state["meta"]["global_step"])
        rng = state["rng"]
        ckpt.set_rng_state(rng[info.rank] if info.rank < len(rng) else rng[0])
        sink.info(f"resumed from {resume_path}: epoch {start_epoch + 1}, iter {skip_batches}, step {global_step}")

    if info.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(getattr(parts.model, "has_unused_parameters", False)),
        )

    if info.is_main:
        ckpt.remove_stale_temps(run_dir)

    sink.emit(
        "run_start",
        phase=phase.name,
        world_size=info.world_size,
        epochs=tc.epochs,
        iters_per_epoch=iters_per_epoch,
        start_epoch=start_epoch + 1,
        start_iter=skip_batches,
        precision=tc.precision,
        model=phase.model.config,
        gca=phase.model.gca,
        device=str(device),
    )
    sink.info(
        f"Start training: {tc.epochs} epochs x {iters_per_epoch} iters, world size {info.world_size}, "
        f"device {device}, precision {tc.precision}"
    )

    def meta(epoch: int, it: int) -> dict:
        return {
            "epoch": epoch,
            "iter": it,
            "global_step": global_step,
            "bevctl_version": BEVCTL_VERSION,
            "torch_version": str(torch.__version__),
            "time": time.time(),
            "phase": phase.name,
            "model_config": phase.model.config,
            "gca": phase.model.gca,
        }

    def save(reason: str, epoch: int, it: int, samples_done: int, epoch_file: int | None) -> None:
        rng = dist_utils.gather_objects(ckpt.rng_state(), info)
        if info.is_main:
            data_state = {"epoch": epoch - 1 if it < iters_per_epoch else epoch, "samples_done": samples_done
                          if it < iters_per_epoch else 0, "seed": tc.seed, "world_size": info.world_size}
            state = checkpoint_state(model, optimizer, schedule, scaler, meta=meta(epoch, it), rng=rng, data_state=data_state)
            path = ckpt.save_run_checkpoint(run_dir, state, epoch_file, tc.max_keep)
            sink.info(f"Saving checkpoint at {epoch} epochs" if epoch_file else f"Saved checkpoint {path.name} at epoch {epoch} iter {it}")
            sink.emit("checkpoint_saved", path=str(path), epoch=epoch, iter=it, global_step=global_step, reason=reason)
        dist_utils.barrier(info)

    recent = collections.deque(maxlen=50)  # step times for the ETA
    nonfinite_in_row, overflow_steps = 0, 0
    window: dict[str, list[float]] = collections.defaultdict(list)
    params = [p for p in model.parameters() if p.requires_grad]

    for epoch in range(start_epoch + 1, tc.epochs + 1):
        model.train()
        skip = skip_batches if epoch == start_epoch + 1 else 0
        sampler.set_epoch(epoch - 1, skip=skip * tc.batch_size)
        if hasattr(parts.train_set, "set_epoch"):  # augmentation keyed on (seed, epoch, index): exact resume
            parts.train_set.set_epoch(epoch - 1)
        generator.manual_seed(tc.seed * 100_003 + epoch)  # worker seeds: per epoch, never from the global RNG
        it = skip
        end = time.perf_counter()
        for batch in loader:
            it += 1
            batch = to_device(batch, device)
            data_time = time.perf_counter() - end
            lr = schedule.get_lr()  # this step's lr (logged like mmcv: the lr the step used)

            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(batch)
            loss = sum(v for k, v in outputs.items() if k.startswith("loss/"))
            bad = dist_utils.any_true(not bool(torch.isfinite(loss)), info)
            grad_norm = float("nan")
            if not bad:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, oc.grad_clip or float("inf")))
                if not math.isfinite(grad_norm):
                    if tc.precision == "fp16":
                        overflow_steps += 1  # the scaler skips this step and lowers its scale: normal
                    else:
                        bad = True
                if not bad:
                    scaler.step(optimizer)
                    scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if bad:
                nonfinite_in_row += 1
                sink.warning(f"Epoch [{epoch}][{it}/{iters_per_epoch}] non-finite loss/grad ({nonfinite_in_row} in a row): step skipped")
                if nonfinite_in_row == 1:
                    sink.emit("alert", level="warning", message=f"non-finite loss/grad at epoch {epoch} iter {it}: step skipped",
                              metric="loss", value=float(loss.detach()))
                if nonfinite_in_row >= tc.nonfinite_limit:
                    return _nonfinite_stop(model, sink, save, epoch, it, tc, info)
            else:
                nonfinite_in_row = 0
                global_step += 1
                schedule.step()

            step_time = time.perf_counter() - end
            recent.append(step_time)
            if not bad:
                window["loss"].append(float(loss.detach()))
                window["grad_norm"].append(grad_norm)
                for k, v in outputs.items():
                    if k.startswith(("loss/", "stats/")):
                        window[k].append(float(v.detach()))
            window["step_time"].append(step_time)
            window["data_time"].append(data_time)

            if (it % tc.log_interval == 0 or it == iters_per_epoch) and window["loss"]:
                _log_train(window, sink, info, epoch, it, iters_per_epoch, global_step, lr, recent,
                           total_iters, device)
            if it % tc.log_interval == 0 or it == iters_per_epoch:
                window.clear()

            if it < iters_per_epoch and dist_utils.any_true(bool(stop), info):
                save("signal", epoch, it, it * tc.batch_size * info.world_size, None)
                name = signal.Signals(stop.signum).name if stop.signum else "signal"
                sink.end("stopped", 0, f"stopped by {name} at epoch {epoch} iter {it}; resume with resume=auto")
                return 0
            if it >= iters_per_epoch:
                break  # max_iters_per_epoch: never fetch a batch that will not be used
            end = time.perf_counter()

        if overflow_steps:
            sink.info(f"fp16: {overflow_steps} steps skipped by the grad scaler so far (overflow)")
        final = epoch == tc.epochs
        if epoch % tc.checkpoint_interval == 0 or final:
            save("final" if final else "epoch", epoch, iters_per_epoch, 0, epoch)
        stopping = dist_utils.any_true(bool(stop), info)
        if stopping and val_loader is not None:
            sink.info(f"Evaluation of epoch {epoch} skipped: stopping")
        elif val_loader is not None and (epoch % tc.eval_interval == 0 or final):
            metrics = parts.evaluate(unwrap(model), val_loader, info, phase=phase, run_dir=run_dir,
                                     should_stop=lambda: dist_utils.any_true(bool(stop), info))
            if metrics:
                sink.emit("val", epoch=epoch, **metrics)
                sink.info(runs.format_val_line(epoch, len(val_loader), metrics))
        if not final and (stopping or dist_utils.any_true(bool(stop), info)):
            if not (epoch % tc.checkpoint_interval == 0 or final):
                save("signal", epoch, iters_per_epoch, 0, None)
            sink.end("stopped", 0, f"stopped at the end of epoch {epoch}; resume with resume=auto")
            return 0

    sink.end("finished", 0, f"finished {tc.epochs} epochs ({global_step} steps)")
    return 0


def _log_train(window, sink, info, epoch, it, iters_per_epoch, global_step, lr, recent, total_iters, device):
    """One `train` event and one mmcv text line: the window's means over steps (and ranks), ETA from recent steps."""
    means = {k: sum(v) / len(v) for k, v in window.items() if v}
    means = dist_utils.mean_dict(means, info)
    step_time = means.pop("step_time", 0.0)
    data_time = means.pop("data_time", 0.0)
    metrics = {k: means[k] for k in sorted(means) if k.startswith(("loss/", "stats/"))}
    for k in ("loss", "grad_norm"):
        if k in means:
            metrics[k] = means[k]
    mem = memory_mb(device)
    eta = (sum(recent) / max(len(recent), 1)) * max(total_iters - global_step, 0)
    sink.emit(
        "train",
        epoch=epoch,
        iter=it,
        iters_per_epoch=iters_per_epoch,
        global_step=global_step,
        lr=lr,
        step_time=step_time,
        data_time=data_time,
        memory=mem,
        **metrics,
    )
    sink.info(runs.format_train_line(epoch, it, iters_per_epoch, lr, eta, step_time, data_time, mem, metrics))


def _nonfinite_stop(model, sink, save, epoch, it, tc, info) -> int:
    message = f"loss or gradient non-finite for {tc.nonfinite_limit} steps in a row at epoch {epoch} iter {it}"
    weights_ok = all(bool(torch.isfinite(p).all()) for p in unwrap(model).parameters())
    if weights_ok:
        # Skipped steps never touched the weights: the current state is the last good one.
        save("nonfinite", epoch, it, it * tc.batch_size * info.world_size, None)
        message += "; last good state saved to latest.pth"
    else:
        message += "; the weights themselves are non-finite, not saved (the last epoch checkpoint is the last good state)"
    sink.emit("alert", level="error", message=message, metric="loss", value=float("nan"))
    sink.error(message)
    sink.end("failed", EXIT_FAILED, message)
    return EXIT_FAILED


def _grace_exceeded(sink: RunSink, grace: float) -> None:
    message = f"could not finish the step and save within train.grace_seconds={grace:g}; exiting without saving"
    try:
        sink.error(message)
        sink.end("failed", EXIT_FAILED, message)
    finally:
        os._exit(EXIT_FAILED)


def _resume_path(phase, run_dir: Path) -> Path | None:
    if not phase.resume:
        return None
    if phase.resume == "auto":
        latest = run_dir / runs.LATEST
        return latest if latest.is_file() else None
    path = Path(phase.resume)
    if not path.is_file():
        raise UsageError(f"resume checkpoint {path} not found", fix="use resume=auto or an existing checkpoint path")
    return path


# --------------------------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True, type=Path, help="the run directory (its run.json holds the phase)")
    p.add_argument("--phase", help="development: a phase name or YAML; writes RUN_DIR/run.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a phase value (with --phase)")
    p.add_argument("--resume", help="auto or a checkpoint path; overrides the phase (and drops load_from)")
    return p.parse_args(argv)


def load_run_phase(args: argparse.Namespace, is_main: bool):
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
        phase = load_run_phase(args, rank == 0)
        sink = RunSink(args.run_dir, main=rank == 0)
        sink.manifest(status="running", exit_code=None, ended_at=None,
                      **({} if (runs.read_manifest(args.run_dir) or {}).get("pid") else {"pid": os.getpid()}))
        info = dist_utils.init(phase.train.device)
        code = train(phase, args.run_dir, info, sink, parts_builder)
        # Ranks leave together: a gloo rank tearing down while rank 0 still writes its last files can abort.
        dist_utils.barrier(info)
    except BevctlError as exc:
        code = exc.code
        if rank == 0:
            print(f"error: {exc.one_line()}", file=sys.stderr, flush=True)
        sink = sink or _late_sink(args.run_dir, rank)
        if sink:
            sink.error(exc.one_line())
            sink.end("failed", code, exc.one_line())
    except Exception as exc:  # a bug: keep the traceback, in the log and on stderr
        code = EXIT_FAILED
        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)
        sink = sink or _late_sink(args.run_dir, rank)
        if sink:
            sink.error(trace)
            sink.end("failed", code, f"{type(exc).__name__}: {exc}")
    finally:
        if sink:
            sink.close()
        dist_utils.cleanup()
    return code


def _late_sink(run_dir: Path, rank: int) -> RunSink | None:
    """A sink for failures before the normal one exists (a bad run.json), when the run dir is there."""
    if rank != 0 or not run_dir.is_dir():
        return None
    try:
        return RunSink(run_dir, main=True, echo=False)
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
