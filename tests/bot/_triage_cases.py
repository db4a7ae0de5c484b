"""Triage fixtures for the results-out tests: the JSON cases in tests/data/summaries/ and a huge one."""
from __future__ import annotations

import dataclasses
import pathlib

from bot.triage_model import Triage

SUMMARIES = pathlib.Path(__file__).resolve().parent.parent / "data" / "summaries"
CASES = ("mixed", "clean", "conflict", "hostile")


def load(name: str) -> Triage:
    path = SUMMARIES / f"{name}.json"
    return Triage.from_json(path.read_text(), source=str(path))


def huge(copies: int, report_repeat: int = 12) -> Triage:
    """`mixed` with every finding copied under distinct titles, tests and long reports."""
    mixed = load("mixed")
    findings = tuple(dataclasses.replace(f, id=f"{f.id}-{i}", title=f"{f.title} #{i}", test=f"{f.test}_{i}",
                                         report=f.report * report_repeat)
                     for i in range(copies) for f in mixed.findings)
    return dataclasses.replace(mixed, findings=findings)
