"""The CLI's display of a run on stderr: a line or bar per stage, and each warning once.

The engine both logs what it changed (a snapped size, an unused input) and returns it as a note;
`NoteLog` shows each of them once, whichever way it arrives.
"""
from __future__ import annotations

import logging
import sys

from .run.report import Reporter


class NoteLog(logging.Handler):
    """Prints engine warnings and run notes to stderr, each distinct text once."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.shown: list[str] = []
        self._root_level = None

    @classmethod
    def install(cls, verbose: bool = False) -> "NoteLog":
        log = cls()
        root = logging.getLogger()
        log._root_level = root.level
        if verbose:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
            root.setLevel(logging.INFO)
        else:
            root.addHandler(log)
            root.setLevel(logging.WARNING)
        return log

    def uninstall(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        if self._root_level is not None:
            root.setLevel(self._root_level)

    def emit(self, record: logging.LogRecord) -> None:
        self._print("warning", record.getMessage())

    def show(self, note: str) -> None:
        self._print("note", note)

    def silence(self) -> None:
        """Show nothing more (the ranks other than 0 of a parallel run: rank 0 speaks for all)."""
        self._print = lambda kind, text: None

    def _print(self, kind: str, text: str) -> None:
        text = text.strip().rstrip(".")
        if not text or any(text in seen or seen in text for seen in self.shown):
            return
        self.shown.append(text)
        print(f"{kind}: {text}", file=sys.stderr)


class TerminalReporter(Reporter):
    """'stage ...' when a stage starts, a tqdm bar while it counts, 'stage: 1.2 s, detail' at its end."""

    def __init__(self, notes: NoteLog):
        self.notes = notes
        self._bar = None
        self._unit = "it"

    def __enter__(self) -> "TerminalReporter":
        return self

    def __exit__(self, *exc) -> bool:
        self._close()
        return False

    def begin(self, stage: str, total: int | None = None, unit: str = "it") -> None:
        self._close()
        self._stage, self._unit = stage, unit
        print(f"{stage} ...", file=sys.stderr, flush=True)

    def update(self, done: int, total: int | None = None) -> None:
        if self._bar is None:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=self._stage, unit=self._unit, file=sys.stderr, leave=False)
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def end(self, stage: str, seconds: float, detail: str = "") -> None:
        self._close()
        print(f"{stage}: {seconds:.1f} s" + (f", {detail}" if detail else ""), file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        self._close()
        self.notes.show(text)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
