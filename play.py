#!/usr/bin/env python
"""Play a real or neural game in a window (or headless), record it, type world events.

With no arguments: the shipped neural Breakout (checkpoints/breakout-diffusion) when it
exists, otherwise the real game. Everything else lives in engine/ (loop, display, audio)
and models/ (the neural simulator); this file only wires flags to them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from engine.errors import ArgumentParser, UserError, one_line_warnings, output_file, run_command

ROOT = Path(__file__).resolve().parent
CHECKPOINTS = ROOT / "checkpoints"

EPILOG = """\
examples:
  python play.py                                   neural Breakout (shipped model), or real if none
  python play.py --game pong --real                real Pong by keyboard
  python play.py --game carracing --real --record data/me    drive, and record every step
  python play.py --checkpoint runs/bk --sampler quality      play your own trained model
  python play.py --game breakout --real --headless --max-steps 2000 --autopilot scripted
  python play.py --list-games

controls:
  WASD / arrows move (CarRacing: Up gas, Down brake, Left/Right steer), Space fires
  Enter reset   P pause   Esc quit   F12 screenshot (saved under screenshots/)
  Tab  split view: the real game beside the neural one, same keys, live PSNR (neural play)
  F2   next sampler preset (neural play)      ` or T   world-event console ("make it rain")
"""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="play.py", description=__doc__.splitlines()[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to play")
    what.add_argument("--game", default=None, metavar="G",
                      help="game short name: breakout, pong, mspacman, ..., carracing (default breakout)")
    what.add_argument("--real", action="store_true", help="play the real game (emulator / Box2D)")
    what.add_argument("--checkpoint", metavar="RUN", help="play a trained world model from RUN/")
    what.add_argument("--list-games", action="store_true", help="print every game name and exit")
    game = p.add_argument_group("game settings (real game, and the split view's real side)")
    game.add_argument("--frameskip", type=int, default=4, metavar="N",
                      help="Atari emulator frames per step: 4 -> 15 steps/s (default 4)")
    game.add_argument("--sticky", type=float, default=0.0, metavar="P",
                      help="Atari sticky-action probability (default 0; ALE v5 uses 0.25)")
    game.add_argument("--action-repeat", type=int, default=2, metavar="N",
                      help="CarRacing physics ticks (50 Hz) per step: 2 -> 25 steps/s (default 2)")
    game.add_argument("--seed", type=int, default=None, metavar="S", help="seed of the first episode (then +1 each)")
    run = p.add_argument_group("running")
    run.add_argument("--record", metavar="DIR", help="append every step to the dataset in DIR")
    run.add_argument("--headless", action="store_true", help="no window: an autopilot plays")
    run.add_argument("--max-steps", type=int, default=None, metavar="N", help="stop after N steps")
    run.add_argument("--max-episodes", type=int, default=None, metavar="N",
                     help="stop after N finished episodes")
    run.add_argument("--autopilot", choices=("random", "scripted"), default=None,
                     help="let a player choose the actions (default when --headless: random); "
                          "scripted plays Breakout, Pong and CarRacing from the real game's state, "
                          "and neural Breakout from the pixels (others: random)")
    run.add_argument("--json", metavar="FILE", help="write the run summary (steps, returns, ms) as JSON")
    show = p.add_argument_group("window, sound, model")
    show.add_argument("--scale", type=int, default=None, metavar="K", help="integer zoom (default: fit the screen)")
    show.add_argument("--no-audio", action="store_true", help="no sound")
    show.add_argument("--sampler", metavar="PRESET", help="neural sampler preset (e.g. fast, quality)")
    show.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                      help="where the world model runs (default auto: cuda if available, else cpu)")
    show.add_argument("--compile", action="store_true",
                      help="fuse the world model's step with torch.compile before play starts "
                           "(a minute or two; on a GPU inside its CUDA graph: the base 3-step "
                           "sampler 6.1 -> 3.2 ms/frame on an H200; on a CPU it gains ~3%%). Only "
                           "the starting --sampler is compiled, so switching presets never stalls")
    show.add_argument("--event-conditioning", choices=("nearest", "prompt"), default="nearest",
                      help="what a world model is conditioned on for a typed event: the trained "
                           "wording nearest to the prompt (default) or the prompt's own embedding")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.real and args.checkpoint:
        raise UserError("--real and --checkpoint exclude each other: pick the real game or a model")
    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max-steps must be >= 1, got {args.max_steps}")
    if args.max_episodes is not None and args.max_episodes < 1:
        raise UserError(f"--max-episodes must be >= 1, got {args.max_episodes}")
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise UserError(f"--seed must be in 0..2**32-1, got {args.seed}")
    if args.frameskip < 1 or args.action_repeat < 1:
        raise UserError(f"--frameskip and --action-repeat must be >= 1, got {args.frameskip} and {args.action_repeat}")
    if args.scale is not None and args.scale < 1:
        raise UserError(f"--scale must be >= 1, got {args.scale}")
    if args.json is not None:
        output_file(args.json)
    if args.compile and args.real:
        raise UserError("--compile speeds up a world model; the real game has none")
    if args.sampler and args.real:
        raise UserError("--sampler picks how a world model draws its frames; the real game has none")


def _open_simulator(args: argparse.Namespace) -> tuple[Any, bool]:
    """The simulator to play and whether it is neural (a world model)."""
    from engine.games import find_game, make_simulator

    checkpoint = args.checkpoint
    if checkpoint is None and not args.real:
        name = find_game(args.game or "breakout").name
        default = CHECKPOINTS / f"{name}-diffusion"
        if default.is_dir():
            checkpoint = str(default)
        else:
            print(f"note: no trained model at {default.relative_to(ROOT)}; playing the real game",
                  file=sys.stderr)
    if checkpoint is not None:
        from models.neural_sim import open_neural_simulator

        neural_sim = open_neural_simulator(checkpoint, device=args.device, sampler=args.sampler)
        if args.game is not None and find_game(args.game).name != neural_sim.spec.name:
            neural_sim.close()
            raise UserError(f"checkpoint {checkpoint} is a {neural_sim.spec.name} model, not {args.game}")
        if args.compile:  # before the window opens: the game must not freeze on its first frame
            try:
                neural_sim.use_compile([neural_sim.sampler])
            except UserError:
                neural_sim.close()
                raise
            print(f"compiling the '{neural_sim.sampler}' step (a minute or two)...", file=sys.stderr)
            try:
                secs = neural_sim.warm_up()
            except Exception as err:  # noqa: BLE001 - no C++ compiler, an unsupported GPU, ...
                neural_sim.close()
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise UserError(f"torch.compile failed ({first[:200]}); play without --compile") from None
            print(f"compiled in {secs:.0f} s", file=sys.stderr)
        return neural_sim, True
    audio = not args.no_audio and (not args.headless or args.record is not None)
    sim = make_simulator(args.game or "breakout", frameskip=args.frameskip, sticky=args.sticky,
                         action_repeat=args.action_repeat, audio=audio, seed=args.seed)
    return _with_events(sim, args.seed), False


def _with_events(sim: Any, seed: int | None) -> Any:
    """The real game with world events applied for real (overlays, physics, RAM)."""
    try:
        from engine.events import EventLayer
    except ImportError:
        return sim
    return EventLayer(sim, seed=seed or 0)


def _make_real(args: argparse.Namespace, spec: Any) -> Any:
    """Factory of the split view's real game, matched to the model's game and step size."""
    from engine.games import make_simulator

    def build() -> Any:
        skip = {"frameskip": spec.frameskip} if spec.family == "atari" else {"action_repeat": spec.frameskip}
        return _with_events(make_simulator(spec.name, sticky=args.sticky, audio=False, **skip), args.seed)

    return build


def _open_console(spec: Any, sim: Any, conditioning: str = "nearest") -> Any:
    """The world-event console when engine/console.py is present; play goes on without it."""
    try:
        from engine import console as console_mod
    except ImportError:
        return None
    try:
        return console_mod.Console(spec=spec, sim=sim, conditioning=conditioning)
    except Exception as err:  # noqa: BLE001 - events are optional; never block play
        print(f"warning: world-event console unavailable ({err})", file=sys.stderr)
        return None


def _print_summary(summary: Any, args: argparse.Namespace) -> None:
    s = summary
    returns = ", ".join(f"{r:g}" for r in s.returns[:10]) + (" ..." if len(s.returns) > 10 else "")
    print(f"played {s.steps} steps, {s.episodes} finished episodes (returns: {returns or '-'};"
          f" current {s.current_return:g}) in {s.wall_s:.1f} s = {s.steps_per_s:.0f} steps/s")
    print(f"simulator step: p50 {s.step_ms_p50:.2f} ms, p99 {s.step_ms_p99:.2f} ms per step")
    if s.frame_ms_p50 is not None:
        print(f"display frame: p50 {s.frame_ms_p50:.1f} ms, p99 {s.frame_ms_p99:.1f} ms")
    if args.json:
        from engine.files import write_atomic

        write_atomic(Path(args.json), json.dumps(s.as_dict(), indent=1).encode(), durable=False)


def play(args: argparse.Namespace) -> int:
    _check_args(args)
    from engine.autopilot import make_policy
    from engine.controls import InputState
    from engine.keymap import Keymap, pygame_key_names
    from engine.loop import FrameLoop, LoopConfig

    sim, neural = _open_simulator(args)
    recorder = display = console = audio = None
    try:
        spec = sim.spec
        if args.record is not None:  # before the window: an unwritable DIR fails right away
            from engine.dataset import Recorder

            # Marked, so that a world model's own frames never pass for the real game in training data.
            extra = {"source": "neural", "checkpoint": str(getattr(sim, "model_name", ""))} if neural else None
            recorder = Recorder(args.record, spec, extra_meta=extra)
        kind = args.autopilot or ("random" if args.headless else None)
        policy = make_policy(kind, spec, args.seed) if kind is not None else None
        config = LoopConfig(max_steps=args.max_steps, max_episodes=args.max_episodes, seed=args.seed)
        if not args.headless:
            from engine.display import Display, DisplayConfig

            shape = (64, 64) if neural else ((96, 96) if spec.family == "carracing" else (210, 160))
            title = f"Neural Arcade - {spec.name} ({'neural' if neural else 'real'})"
            display = Display(DisplayConfig(title=title, scale=args.scale), shape)
            console = _open_console(spec, sim, args.event_conditioning)
            if spec.audio_rate > 0 and not args.no_audio:
                from engine.audio import AudioConfig, AudioOut

                audio = AudioOut(AudioConfig(rate=spec.audio_rate))
        loop = FrameLoop(
            sim, config, display=display, controls=InputState(pygame_key_names()),
            keymap=Keymap.for_spec(spec), policy=policy, recorder=recorder, console=console,
            audio=audio, make_real=_make_real(args, spec) if neural else None)
        if args.record is not None:
            print(f"recording to {args.record}")
        recorder = None  # the loop owns it now and closes its episode however it ends
        summary = loop.run()
    finally:
        if recorder is not None:
            recorder.close()
        if console is not None:
            console.close()
        if display is not None:
            display.close()
        sim.close()
    _print_summary(summary, args)
    return 130 if loop.interrupted else 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    one_line_warnings()
    args = build_parser().parse_args(argv)
    if args.list_games:
        return run_command(_list_games)
    return run_command(lambda: play(args))


def _list_games() -> int:
    from engine.games import list_games

    print(" ".join(list_games()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
