"""World events for the real games: the catalog (assets/events.yaml), `EventLayer`, random schedules.

`EventLayer(sim)` wraps a real simulator and makes the events it is stepped with real: a look
event composites an animated overlay (engine/looks.py) onto every frame from its onset to its end;
a dynamics event changes the simulation itself at onset and end (CarRacing `set_physics`, Atari
`set_ram`). `random_schedule` draws the onsets and ends that `train.py collect --events random`
records, so datasets hold many event transitions and combinations.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from engine.errors import UserError
from engine.looks import LOOKS, apply_looks
from engine.simulator import GameSpec, Step, WorldEvent

EVENTS_YAML = Path(__file__).resolve().parent.parent / "assets" / "events.yaml"

Kind = Literal["look", "dynamics"]


@dataclass(frozen=True)
class RamEdit:
    """Atari RAM write applied once at an event's onset: with `set`, ram[index + i] = set[i];
    otherwise ram[index] = min(max, ram[index] + add)."""

    index: int
    add: int = 1
    max: int = 255
    set: tuple[int, ...] = ()


def _ram_edits(value: Any, where: str) -> tuple[RamEdit, ...]:
    items = value if isinstance(value, list) else [value]
    edits = []
    for d in items:
        if not isinstance(d, dict) or "index" not in d:
            raise UserError(f"{where}: each ram edit needs an 'index'")
        values = tuple(int(v) for v in d.get("set", ()))
        if not all(0 <= v <= 255 for v in values) or not 0 <= int(d["index"]) + len(values) <= 128:
            raise UserError(f"{where}: ram edit out of range (128 bytes of 0..255)")
        edits.append(RamEdit(int(d["index"]), int(d.get("add", 1)), int(d.get("max", 255)), values))
    return tuple(edits)


@dataclass(frozen=True)
class EventSpec:
    """One promptable event as assets/events.yaml declares it."""

    name: str
    kind: Kind
    games: tuple[str, ...] | None
    """Game names it applies to; None = every game."""
    description: str
    train: tuple[str, ...]
    """Paraphrases used for matching and for training world models."""
    heldout: tuple[str, ...]
    """Paraphrases never used in training or matching (they test generalisation)."""
    end: tuple[str, ...]
    """Prompts that end this event ("stop the rain")."""
    physics: dict[str, float] = field(default_factory=dict)
    """CarRacing `set_physics` scales while active, e.g. {"friction_scale": 0.25}."""
    ram: tuple[RamEdit, ...] = ()
    """Atari RAM writes applied once at onset."""

    def applies_to(self, game: str) -> bool:
        return self.games is None or game in self.games


@dataclass(frozen=True)
class EventCatalog:
    events: dict[str, EventSpec]
    end_all_train: tuple[str, ...]
    end_all_heldout: tuple[str, ...]
    decoys: tuple[str, ...]
    """Phrasings close in wording to an event but meaning none ("destroy all the bricks"):
    a prompt nearest to one of them changes nothing."""
    match_threshold: float
    sha256: str
    """Hash of every phrasing (train, heldout, end, end_all; not the other fields): the shipped
    embedding bank records it, so a bank older than the phrasings is detected."""

    def for_game(self, game: str) -> list[EventSpec]:
        """Events that apply to `game`, in catalog order."""
        return [e for e in self.events.values() if e.applies_to(game)]

    def get(self, name: str) -> EventSpec:
        if name not in self.events:
            raise UserError(f"unknown event {name!r}; known: {', '.join(self.events)}")
        return self.events[name]


def _strings(d: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    items = d.get(key) or []
    if not isinstance(items, list) or not all(isinstance(s, str) and s.strip() for s in items):
        raise UserError(f"{where}: {key!r} must be a list of non-empty strings")
    return tuple(s.strip() for s in items)


def parse_catalog(text: str, where: str = "events.yaml") -> EventCatalog:
    """Parse and validate the events yaml text; problems raise UserError naming the field."""
    import hashlib

    doc = yaml.safe_load(text) or {}
    if not isinstance(doc.get("events"), dict) or not doc["events"]:
        raise UserError(f"{where}: needs an 'events' mapping")
    events: dict[str, EventSpec] = {}
    for name, d in doc["events"].items():
        w = f"{where}: event {name!r}"
        if not isinstance(d, dict):
            raise UserError(f"{w} must be a mapping")
        kind = d.get("kind")
        if kind not in ("look", "dynamics"):
            raise UserError(f"{w}: kind must be 'look' or 'dynamics', got {kind!r}")
        if kind == "look" and name not in LOOKS:
            raise UserError(f"{w}: no overlay named {name!r} in engine/looks.py LOOKS")
        games = d.get("games", "all")
        if games != "all" and not (isinstance(games, list) and all(isinstance(g, str) for g in games)):
            raise UserError(f"{w}: games must be 'all' or a list of game names")
        ram = d.get("ram")
        physics = {k: float(v) for k, v in (d.get("physics") or {}).items()}
        if kind == "dynamics" and not physics and not ram:
            raise UserError(f"{w}: a dynamics event needs 'physics' or 'ram'")
        spec = EventSpec(
            name=str(name), kind=kind, games=None if games == "all" else tuple(games),
            description=str(d.get("description", "")), train=_strings(d, "train", w),
            heldout=_strings(d, "heldout", w), end=_strings(d, "end", w), physics=physics,
            ram=_ram_edits(ram, w) if ram else (),
        )
        if not spec.train:
            raise UserError(f"{w}: needs at least one 'train' paraphrase")
        events[spec.name] = spec
    end_all = doc.get("end_all") or {}
    end_all_train = _strings(end_all, "train", f"{where}: end_all")
    end_all_heldout = _strings(end_all, "heldout", f"{where}: end_all")
    phrasings = {n: [e.train, e.heldout, e.end] for n, e in events.items()}
    decoys = _strings(doc, "decoys", where)
    phrasings["<end_all>"] = [end_all_train, end_all_heldout]
    if decoys:  # keeps the hash of catalogs without decoys unchanged
        phrasings["<decoys>"] = [decoys]
    return EventCatalog(
        events=events,
        end_all_train=end_all_train,
        end_all_heldout=end_all_heldout,
        decoys=decoys,
        match_threshold=float(doc.get("match_threshold", 0.5)),
        sha256=hashlib.sha256(json.dumps(phrasings).encode()).hexdigest(),
    )


@lru_cache(maxsize=4)
def load_catalog(path: str | Path = EVENTS_YAML) -> EventCatalog:
    """The event catalog (cached per path)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"event catalog not found: {p}")
    return parse_catalog(p.read_text(encoding="utf-8"), str(p))


def _event_seed(base: int, name: str, onset: int) -> int:
    """A look instance's seed: a function of the layer seed, the event and its onset step."""
    return (base * 1_000_003 + zlib.crc32(name.encode()) + onset * 7919) % (2**31)


class EventLayer:
    """A `Simulator` around a real one that applies world events for real.

    Looks: overlays on every frame from the onset step (t = 0) until the step the event is no
    longer passed. Dynamics: `set_physics` scales (the product over active physics events) are set
    at every onset and end; RAM edits are applied once at onset. `reset` ends every event and
    restores default physics, so each episode starts clean. Deterministic for a `seed`.
    Attributes the layer does not define (ram(), car_state(), ...) are the wrapped simulator's.
    """

    events_supported = True

    def __init__(self, sim: Any, *, seed: int = 0, catalog: EventCatalog | None = None) -> None:
        self.sim = sim
        self.spec: GameSpec = sim.spec
        self.catalog = catalog or load_catalog()
        self._seed = int(seed)
        self._episode = 0
        self._t = 0  # steps since reset
        self._onsets: dict[str, int] = {}  # active event name -> step of onset

    def __getattr__(self, name: str) -> Any:  # delegate ram(), set_ram(), car_state(), ...
        if name == "sim":
            raise AttributeError(name)
        return getattr(self.sim, name)

    @property
    def active_names(self) -> tuple[str, ...]:
        return tuple(self._onsets)

    def reset(self, seed: int | None = None) -> np.ndarray:
        had_physics = any(self.catalog.events[n].physics for n in self._onsets)
        self._onsets.clear()
        if had_physics:
            self._apply_physics()
        self._episode += 1
        if seed is not None:
            self._seed, self._episode = int(seed), 0
        self._t = 0
        return np.asarray(self.sim.reset(seed))

    def step(self, action: int, events: Sequence[WorldEvent] = ()) -> Step:
        names = []
        for e in events:
            spec = self.catalog.events.get(e.name)
            if spec is not None and spec.applies_to(self.spec.name) and e.name not in names:
                names.append(e.name)
        self._update(names)
        step = self.sim.step(action, ())
        if self._onsets:
            looks = {
                n: (self._t - t0, _event_seed(self._seed * 65_537 + self._episode, n, t0))
                for n, t0 in self._onsets.items() if n in LOOKS
            }
            if looks:
                step.frame = apply_looks(np.asarray(step.frame), looks)
            step.info["events"] = tuple(self._onsets)
        self._t += 1
        return step

    def close(self) -> None:
        self.sim.close()

    def _update(self, names: list[str]) -> None:
        """Start the events newly in `names` and end those no longer in it."""
        physics_changed = False
        for n in [n for n in self._onsets if n not in names]:
            del self._onsets[n]
            physics_changed |= bool(self.catalog.events[n].physics)
        for n in names:
            if n in self._onsets:
                continue
            self._onsets[n] = self._t
            spec = self.catalog.events[n]
            physics_changed |= bool(spec.physics)
            for edit in spec.ram:
                self._apply_ram(edit)
        if physics_changed:
            self._apply_physics()

    def _apply_physics(self) -> None:
        scales: dict[str, float] = {}
        for n in self._onsets:
            for k, v in self.catalog.events[n].physics.items():
                scales[k] = scales.get(k, 1.0) * v
        if hasattr(self.sim, "set_physics"):
            self.sim.set_physics(**scales)

    def _apply_ram(self, edit: RamEdit) -> None:
        if not (hasattr(self.sim, "ram") and hasattr(self.sim, "set_ram")):
            return
        if edit.set:
            for i, v in enumerate(edit.set):
                self.sim.set_ram(edit.index + i, v)
        else:
            value = int(self.sim.ram()[edit.index])
            self.sim.set_ram(edit.index, min(edit.max, value + edit.add))


@dataclass(frozen=True)
class ScheduleConfig:
    """How `random_schedule` draws events (steps are agent steps)."""

    first_onset_max: int = 30
    gap_min: int = 12
    """Steps between consecutive onsets (drawn uniformly in [gap_min, gap_max])."""
    gap_max: int = 80
    duration_min: int = 15
    duration_max: int = 100
    quiet_prob: float = 0.3
    """Chance that an onset slot is skipped, leaving event-free stretches. With these defaults
    about 32% of steps have no event (the null condition), 51% one and 18% two or more,
    with ~16 onsets per 1000 steps."""


Schedule = list[tuple[int, int, WorldEvent]]


def random_schedule(
    rng: np.random.Generator, game: str, num_steps: int, *,
    config: ScheduleConfig = ScheduleConfig(), catalog: EventCatalog | None = None,
) -> Schedule:
    """Random event onsets and ends for one episode of `game`.

    Returns (start, end, event) triples, sorted by start: the event is active on steps
    start <= t < end. Onsets come every gap_min..gap_max steps and durations overlap, so
    combinations of two or three events are common; the same event never overlaps itself.
    Each event's prompt is a random TRAIN paraphrase (similarity 1, no embedding: training looks
    the paraphrase up in the embedding bank). Empty when no event applies to the game.
    """
    cat = catalog or load_catalog()
    specs = cat.for_game(game)
    if not specs or num_steps <= 0:
        return []
    c = config
    out: Schedule = []
    busy_until = {s.name: 0 for s in specs}
    t = int(rng.integers(0, c.first_onset_max + 1))
    while t < num_steps:
        free = [s for s in specs if busy_until[s.name] <= t]
        if free and rng.random() >= c.quiet_prob:
            spec = free[int(rng.integers(len(free)))]
            end = min(num_steps, t + int(rng.integers(c.duration_min, c.duration_max + 1)))
            prompt = spec.train[int(rng.integers(len(spec.train)))]
            out.append((t, end, WorldEvent(spec.name, prompt, 1.0)))
            busy_until[spec.name] = end
        t += int(rng.integers(c.gap_min, c.gap_max + 1))
    return out


def events_at(schedule: Schedule, step: int) -> tuple[WorldEvent, ...]:
    """The events of `schedule` active on `step`, in onset order."""
    out = []
    for start, end, e in schedule:  # sorted by start: stop at the first one still ahead
        if start > step:
            break
        if step < end:
            out.append(e)
    return tuple(out)
