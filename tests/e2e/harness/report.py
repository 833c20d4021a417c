"""Figures the tests want shown at the end of the run (e.g. the crash
test's duplicate count), printed by conftest's terminal summary."""

LINES: list[str] = []


def note(line: str) -> None:
    LINES.append(line)
