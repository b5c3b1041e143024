"""The pygame window: integer-scaled frames, letterboxing, HUD strip, split view, screenshots.

Layout (window coordinates):

    +---------------------------------------+
    | HUD strip: HUD_LINES lines of text     |
    +---------------------------------------+
    |            content area               |   one frame, or two side by side (split view),
    |   (letterboxed, integer scale when    |   each fitted into its half keeping aspect
    |    it fits, nearest-neighbour)        |
    +---------------------------------------+

Frames of any size work (210x160 Atari, 96x96 CarRacing, 64x64 neural). Only the main
thread touches pygame here; the frame loop steps simulators on a worker thread.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pygame

from engine.errors import UserError

HUD_LINES = 3
FONT_PX = 16
LINE_PX = 19
BG = (12, 12, 16)
HUD_BG = (24, 24, 32)
TEXT = (230, 230, 230)
DIM = (150, 150, 170)
ACCENT = (255, 210, 90)


class DisplayUnavailable(UserError):
    """SDL could not open a window (no X/Wayland display, no video driver)."""


@dataclass(frozen=True)
class DisplayConfig:
    title: str = "Neural Arcade"
    scale: int | None = None
    """Integer zoom of one frame; None picks the largest that fits ~80% of the desktop."""
    fps: int = 60
    """Display (and input polling) rate; simulators step at their own rate."""


def fit_rect(src_w: int, src_h: int, area: pygame.Rect) -> pygame.Rect:
    """Largest rect of src's aspect inside `area`, centred; integer multiples when possible."""
    k = min(area.w // src_w, area.h // src_h)
    if k >= 1:
        w, h = src_w * k, src_h * k
    else:  # window smaller than one native frame: fractional scale, aspect kept
        s = min(area.w / src_w, area.h / src_h)
        w, h = max(1, int(src_w * s)), max(1, int(src_h * s))
    return pygame.Rect(area.x + (area.w - w) // 2, area.y + (area.h - h) // 2, w, h)


def frame_surface(frame: np.ndarray) -> pygame.Surface:
    """(H, W, 3) uint8 -> pygame Surface (pygame's surfarray is (W, H, 3))."""
    return pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))


class Display:
    """A resizable window showing one frame (or two, in split view) under a HUD strip."""

    def __init__(self, config: DisplayConfig, frame_shape: tuple[int, int]) -> None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        self.config = config
        self.frame_h, self.frame_w = frame_shape
        if (sys.platform.startswith("linux") and not os.environ.get("SDL_VIDEODRIVER")
                and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
            raise DisplayUnavailable("cannot open a window: no display (neither DISPLAY nor "
                                     "WAYLAND_DISPLAY is set); run with --headless to play without one")
        try:
            pygame.display.init()
            # With no X/Wayland display SDL quietly falls back to an invisible offscreen driver;
            # a window nobody can see is no window. An explicit SDL_VIDEODRIVER (tests: dummy)
            # is the user's choice and is kept.
            driver = pygame.display.get_driver()
            if driver in ("offscreen", "dummy") and not os.environ.get("SDL_VIDEODRIVER"):
                pygame.display.quit()
                raise pygame.error(f"no display found (SDL fell back to its {driver} driver)")
            pygame.font.init()
            self.scale = config.scale or self._auto_scale(self.frame_w, self.frame_h)
            self.window = pygame.display.set_mode(self._natural_size(split=False), pygame.RESIZABLE)
        except pygame.error as err:
            raise DisplayUnavailable(
                f"cannot open a window ({err}); run with --headless to play without one") from err
        pygame.display.set_caption(config.title)
        pygame.key.set_repeat()  # no OS key repeat: held keys are state, not repeated presses
        self.font = pygame.font.Font(None, FONT_PX + 4)  # pygame's bundled default font
        self.small = pygame.font.Font(None, FONT_PX + 1)
        self.clock = pygame.time.Clock()
        self.split = False
        self._last_present = time.perf_counter()

    # -- sizing ---------------------------------------------------------------------------
    def _auto_scale(self, w: int, h: int) -> int:
        try:
            desk_w, desk_h = pygame.display.get_desktop_sizes()[0]
        except (pygame.error, IndexError):
            desk_w, desk_h = 1280, 800
        if desk_w <= 0 or desk_h <= 0:
            desk_w, desk_h = 1280, 800
        usable_h = int(desk_h * 0.8) - HUD_LINES * LINE_PX
        return max(1, min(int(desk_w * 0.8) // (2 * w), usable_h // h, 8))

    def _natural_size(self, split: bool) -> tuple[int, int]:
        w = self.frame_w * self.scale * (2 if split else 1)
        return max(w, 360), self.frame_h * self.scale + HUD_LINES * LINE_PX

    def set_frame_shape(self, shape: tuple[int, int]) -> None:
        """Adopt the size of the frames actually produced (the first reset tells us)."""
        if (shape[0], shape[1]) != (self.frame_h, self.frame_w):
            self.frame_h, self.frame_w = shape[0], shape[1]
            if not self.config.scale:
                self.scale = self._auto_scale(self.frame_w, self.frame_h)
            self.window = pygame.display.set_mode(self._natural_size(self.split), pygame.RESIZABLE)

    def set_split(self, split: bool) -> None:
        self.split = split
        self.window = pygame.display.set_mode(self._natural_size(split), pygame.RESIZABLE)

    def handle_resize(self, event: pygame.event.Event) -> None:
        """VIDEORESIZE: keep the user's size (content is letterboxed into it)."""
        w, h = max(160, event.w), max(HUD_LINES * LINE_PX + 64, event.h)
        surface = pygame.display.get_surface()
        if surface is not None and surface.get_size() == (w, h):
            self.window = surface  # SDL2 already resized it; set_mode again can loop on some WMs
        else:
            self.window = pygame.display.set_mode((w, h), pygame.RESIZABLE)

    # -- drawing --------------------------------------------------------------------------
    def content_rect(self) -> pygame.Rect:
        w, h = self.window.get_size()
        top = HUD_LINES * LINE_PX
        return pygame.Rect(0, top, w, max(1, h - top))

    def draw(self, frame: np.ndarray, hud: Sequence[str], overlay: Sequence[str] = (),
             right: np.ndarray | None = None, labels: tuple[str, str] = ("neural", "real")) -> None:
        """Draw one display frame (not yet flipped; `present` does that after overlays).

        Args:
            frame: (H, W, 3) uint8 main frame.
            hud: up to HUD_LINES lines for the strip at the top.
            overlay: extra lines drawn translucent over the top-left of the content (events).
            right: second frame for split view, shown right of `frame` (any size).
        """
        self.window.fill(BG)
        area = self.content_rect()
        if right is None:
            self._blit_frame(frame, area)
        else:
            half = area.w // 2
            left_area = pygame.Rect(area.x, area.y, half, area.h)
            right_area = pygame.Rect(area.x + half, area.y, area.w - half, area.h)
            for img, sub, label in ((frame, left_area, labels[0]), (right, right_area, labels[1])):
                rect = self._blit_frame(img, sub)
                tag = self.small.render(label, True, ACCENT)
                self.window.blit(tag, (rect.x + 4, rect.bottom - tag.get_height() - 2))
            pygame.draw.line(self.window, DIM, (area.x + half, area.y), (area.x + half, area.bottom))
        self._draw_hud(hud)
        self._draw_overlay(overlay, area)

    def _blit_frame(self, frame: np.ndarray, area: pygame.Rect) -> pygame.Rect:
        h, w = frame.shape[:2]
        rect = fit_rect(w, h, area)
        surf = frame_surface(frame)
        self.window.blit(pygame.transform.scale(surf, rect.size), rect.topleft)
        return rect

    def _draw_hud(self, lines: Sequence[str]) -> None:
        w = self.window.get_width()
        pygame.draw.rect(self.window, HUD_BG, (0, 0, w, HUD_LINES * LINE_PX))
        for i, line in enumerate(list(lines)[:HUD_LINES]):
            color = TEXT if i == 0 else DIM
            self.window.blit(self.font.render(line, True, color), (6, 2 + i * LINE_PX))

    def _draw_overlay(self, lines: Sequence[str], area: pygame.Rect) -> None:
        if not lines:
            return
        rendered = [self.small.render(line, True, ACCENT) for line in lines]
        box_w = max(r.get_width() for r in rendered) + 8
        box = pygame.Surface((min(box_w, area.w), len(rendered) * (FONT_PX - 1) + 6), pygame.SRCALPHA)
        box.fill((0, 0, 0, 150))
        self.window.blit(box, (area.x + 2, area.y + 2))
        for i, r in enumerate(rendered):
            self.window.blit(r, (area.x + 6, area.y + 5 + i * (FONT_PX - 1)))

    def present(self) -> float:
        """Flip and wait for the next display tick; returns this display frame's ms."""
        pygame.display.flip()
        self.clock.tick(self.config.fps)
        now = time.perf_counter()
        ms = (now - self._last_present) * 1000.0
        self._last_present = now
        return ms

    @property
    def fps(self) -> float:
        return float(self.clock.get_fps())

    def screenshot(self, directory: str | Path, stem: str) -> Path:
        """Save the window as PNG under `directory`; returns the path."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.png"
        n = 1
        while path.exists():
            path = out / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{n}.png"
            n += 1
        pygame.image.save(self.window, str(path))
        return path

    def close(self) -> None:
        pygame.display.quit()
