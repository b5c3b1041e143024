"""`train.py fit`: train a world model from recordings into a run directory."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

HELP = "train a world model from recordings"
DESCRIPTION = """\
Train a world model (diffusion or autoregressive, as the config says) on recorded episodes and
write RUN/: model.safetensors + config.yaml (everything play needs) and, for --resume,
train_state.safetensors + train_state.yaml. Checkpoints are atomic: killing fit at any moment
leaves the last checkpoint intact, and --resume continues from it (same step count, same
optimizer state, same batches). Ctrl+C stops after the current step and saves.
TensorBoard logs go to RUN/tensorboard (tensorboard --logdir RUN).
Multi-GPU: torchrun --nproc_per_node 8 train.py fit ... (DDP; batch_size is per GPU)."""
EPILOG = """\
examples:
  python train.py fit --config assets/configs/breakout-diffusion.yaml --data data/breakout --out runs/bk
  python train.py fit --config assets/configs/breakout-diffusion.yaml --data data/breakout --out runs/bk \\
      --set preset=tiny --steps 50 --device cpu
  python train.py fit --config assets/configs/breakout-diffusion.yaml --data data/breakout --out runs/bk --resume
  python train.py fit --config runs/bk --data data/breakout --out runs/bk --resume   # same settings as last time
  python train.py fit ... --set train.lr=1e-4 --set model.unet.cond_dim=64
  # go on training the shipped model on your own recordings, all its weights, the file's recipe:
  python train.py fit --config assets/configs/breakout-diffusion.yaml --init checkpoints/breakout-diffusion \\
      --data data/mine --out runs/mine
  # ...or with the recipe of its last training stage, as its config.yaml records it:
  python train.py fit --config checkpoints/breakout-diffusion --init checkpoints/breakout-diffusion \\
      --data data/mine --out runs/mine
  # ...or only how event prompts enter it (every other weight frozen; diffusion family):
  python train.py fit ... --set 'train.trainable=[unet.event_proj]'"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `fit` subcommand to train.py's parser."""
    p = sub.add_parser("fit", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="YAML",
                   help="model config, e.g. assets/configs/breakout-diffusion.yaml, or a run "
                        "directory: the model and training settings that run was trained with")
    p.add_argument("--data", required=True, metavar="DIR", help="recordings (train.py collect / play.py --record)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to create (or resume)")
    p.add_argument("--steps", type=int, metavar="N",
                   help="optimizer steps in all (overrides train.steps; with stages, scales stage_steps)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                   help="auto: the GPU if there is one, else the CPU with a warning (default)")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN from its last checkpoint (training settings come from --config and --set; "
                        "a note names any that changed; --config RUN keeps the run's own)")
    p.add_argument("--init", metavar="RUN",
                   help="start from the weights of another run of the same model (fine-tune a shipped "
                        "checkpoint on your own recordings); the optimizer starts fresh")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set preset=tiny --set train.lr=1e-4 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    p.set_defaults(func=run)


def pick_device(name: str) -> Any:
    """The torch device for --device (auto, cpu, cuda, cuda:N); under torchrun, this process's GPU."""
    import torch

    from engine.errors import UserError

    name = (name or "auto").strip().lower()
    if name == "auto":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU found"
            print(f"warning: {why}; running on the CPU (slow beyond the tiny preset)", file=sys.stderr)
            return torch.device("cpu")
        name = "cuda"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UserError(f"unsupported device '{name}'; use auto, cpu or cuda[:N]")
    if not torch.cuda.is_available():
        build = "without" if torch.version.cuda is None else "with"
        raise UserError(f"--device {name}: no CUDA GPU is available (torch {torch.__version__} built "
                        f"{build} CUDA); use --device cpu or auto")
    index = int(os.environ.get("LOCAL_RANK", "0")) if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def load_config(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve the config file, fill the train section's defaults, apply --set and --steps."""
    import dataclasses

    from models.config import apply_overrides, resolve_config
    from models.train_config import TrainConfig

    presets = [s for s in args.set if s.startswith("preset=")]
    rest = [s for s in args.set if not s.startswith("preset=")]
    config = resolve_config(args.config, presets)
    # Defaults first, so `--set train.save_dtype=bfloat16` works even when the file omits it.
    train = dataclasses.asdict(TrainConfig.parse(config.get("train")))
    config["train"] = {k: list(v) if isinstance(v, tuple) else v for k, v in train.items()}
    config = apply_overrides(config, rest)
    cfg = TrainConfig.parse(config["train"])
    if args.steps is not None:
        if args.steps < 1:
            from engine.errors import UserError

            raise UserError("--steps must be >= 1")
        if cfg.stages:  # keep the stages' proportions
            total = sum(cfg.stage_steps)
            shares = [n * args.steps / total for n in cfg.stage_steps]
            scaled = [max(1, int(x)) for x in shares]
            # Hand the remainder to the stages with the largest fractional parts: sums to --steps.
            for k in sorted(range(len(shares)), key=lambda k: int(shares[k]) - shares[k]):
                if sum(scaled) >= args.steps:
                    break
                scaled[k] += 1
            config["train"]["stage_steps"] = scaled
        config["train"]["steps"] = args.steps
    if cfg.stages:
        config["train"]["steps"] = sum(config["train"]["stage_steps"])
    return config


def check_resume(config: dict[str, Any], saved: dict[str, Any], run_dir: str) -> None:
    """A resumed run must keep its family, game and model; the train section may change."""
    from engine.errors import UserError
    from models.config import run_recipe

    game = run_recipe(saved).get("game")
    if config.get("game") and game and str(config["game"]).lower() != game:
        raise UserError(f"{run_dir} trains {game}, but --config is for {config['game']}")
    if config.get("family") != saved.get("family"):
        raise UserError(f"{run_dir} is a {saved.get('family')} run, but --config describes {config.get('family')}")
    # Sampler presets are play-time settings, not weights: a resumed run takes the new ones.
    play_only = ("sampler", "samplers")
    new = {k: v for k, v in (config.get("model") or {}).items() if k not in play_only}
    old = {k: v for k, v in (saved.get("model") or {}).items() if k not in play_only}
    if new != old:
        keys = sorted(k for k in set(new) | set(old) if new.get(k) != old.get(k))
        raise UserError(f"--resume with another model than {run_dir} was trained with "
                        f"(model.{keys[0] if keys else '?'} differs); use the same --config and --set")


def train_changes(config: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    """Training settings of a resumed run that differ from its last session's, as 'train.KEY
    OLD -> NEW' (step counts left out: --steps changes them on purpose). The train section comes
    from --config and --set, not from the run, so a resume without the earlier --set flags would
    otherwise change batch size or learning rate unnoticed."""
    import dataclasses

    from models.config import ConfigError
    from models.train_config import TrainConfig

    new, old = config.get("train") or {}, saved.get("train") or {}
    try:  # compare the settings, not their spelling: '2e-4' is 0.0002, an absent key its default
        new, old = (dataclasses.asdict(TrainConfig.parse(d)) for d in (new, old))
    except ConfigError:  # a run saved by a version with other keys: compare as written
        pass
    return [f"train.{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(new) | set(old))
            if k not in ("steps", "stage_steps") and new.get(k) != old.get(k)]


def run(args: argparse.Namespace) -> int:
    from engine.errors import UserError
    from models.checkpoint import has_run, load_train_state, read_config
    from models.train_config import TrainConfig

    config = load_config(args)
    cfg = TrainConfig.parse(config["train"])
    device = pick_device(args.device)
    state = None
    if has_run(args.out):
        if not args.resume:
            raise UserError(f"{args.out} already holds a run; pass --resume to continue it, or choose another --out")
        state = load_train_state(args.out)
        if state is None:
            raise UserError(f"{args.out} has no train_state.safetensors to resume from (a play-only checkpoint)")
        saved = read_config(args.out)
        check_resume(config, saved, args.out)
        changes = train_changes(config, saved)
        if changes:
            print(f"note: resuming {args.out} with other training settings than its last session: "
                  f"{', '.join(changes)} (--set them to keep the old ones)")
    elif args.resume:
        print(f"note: nothing to resume in {args.out}; starting a new run")
    out_existed = Path(args.out).exists()
    check_out_dir(Path(args.out))
    try:
        trainer = build_trainer(args, config, cfg, state, device)
    except BaseException:
        if not out_existed:  # a typo in the config or the data leaves no empty run directory behind
            with contextlib.suppress(OSError):
                Path(args.out).rmdir()
        raise
    if state is not None:
        trainer.resume_from(state)
        print(f"resuming {args.out} at step {state.step}")
    first, seconds, waited = trainer.step, trainer.train_seconds, trainer.data_seconds
    logs = trainer.fit()
    done, seconds = trainer.step - first, trainer.train_seconds - seconds
    waited = trainer.data_seconds - waited
    rate = done / seconds if seconds > 0 else 0.0
    loss = logs.get("loss", float("nan"))
    if trainer.dist.main and done == 0:
        print(f"{args.out} is already trained to step {trainer.step}; nothing to do (raise --steps to go on)")
    elif trainer.dist.main:
        print(f"saved {args.out}: step {trainer.step}/{cfg.total_steps}, loss {loss:.4f}, "
              f"{done} steps in {seconds:.0f} s on {device} "
              f"({rate:.2f} steps/s, {rate * cfg.batch_size * trainer.dist.world:.1f} samples/s, "
              f"{waited / max(seconds, 1e-9):.0%} of it waiting for data)")
    if trainer.dist.world > 1:
        import torch.distributed as tdist

        tdist.destroy_process_group()
    if not trainer.finished:
        print(f"stopped early; continue with: python train.py fit --config {args.out} --data {args.data} "
              f"--out {args.out} --resume")
        return 130
    return 0


def build_trainer(args: argparse.Namespace, config: dict[str, Any], cfg: Any, state: Any, device: Any) -> Any:
    """The model (warm-started with --init), the recordings at its resolution and the Trainer;
    `cfg` is the parsed train section (models/train_config.py `TrainConfig`)."""
    import torch

    from engine.dataset import open_dataset
    from engine.errors import UserError
    from engine.recorder import episode_source
    from models.data import Recordings, describe, split_episodes
    from models.registry import build_model
    from models.trainer import Trainer

    dataset = open_dataset(args.data)
    spec = dataset.spec
    neural = sum(episode_source(e.meta) == "neural" for e in dataset.episodes)
    if neural:  # a model learning from a model's frames learns its mistakes as the game
        print(f"warning: {neural} of the {len(dataset.episodes)} episodes in {args.data} were played by a "
              "world model (play.py --checkpoint --record), not the real game", file=sys.stderr)
    if config.get("game") and str(config["game"]).lower() != spec.name:
        raise UserError(f"{args.config} is for {config['game']}, but {args.data} holds {spec.name} episodes")

    torch.manual_seed(cfg.seed)
    model: Any = build_model(config, spec).to(device)
    if args.init and state is None:
        warm_start(model, args.init, spec.name)
    bank = event_bank()
    recs = Recordings(dataset, int(model.resolution), sorted(bank), progress=not args.no_progress)
    train, held = split_episodes(len(recs.episodes), cfg.holdout_fraction)
    if not held:
        print("note: one episode only; no held-out split (held-out loss and eval need two or more)")
    config["data"] = describe(recs, train, held)
    start = recs.start_contexts(int(model.context_frames), 8, train)
    return Trainer(model, config, spec, recs, train, held, bank, start, args.out, device,
                   progress=not args.no_progress)


def check_out_dir(out: Path) -> None:
    """--out must be a directory this process can write, checked before data and model load."""
    from engine.errors import UserError

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a run directory")
    probe = out / f".write-test.{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write the run into {out}: {err.strerror or err}") from None


def warm_start(model: Any, run_dir: str, game: str) -> None:
    """Copy the (EMA) weights of `run_dir` into `model`; the architectures must match exactly."""
    from engine.errors import UserError
    from models.checkpoint import load_run

    source = load_run(run_dir, "cpu", expect_game=game).model.state_dict()
    target = model.state_dict()
    mismatched = [k for k in target if k not in source or source[k].shape != target[k].shape]
    if mismatched:
        raise UserError(f"--init {run_dir} has another architecture (first differing weight: {mismatched[0]})")
    model.load_state_dict(source)
    print(f"initialised from {run_dir}")


def event_bank() -> dict[str, Any]:
    """Training-paraphrase embeddings per event; empty (events off) when the bank is unavailable."""
    from engine.errors import UserError

    try:
        from models.text import load_event_bank

        return load_event_bank("train")
    except (ImportError, OSError, UserError) as err:
        print(f"note: no event embeddings ({err}); training without event conditioning")
        return {}
