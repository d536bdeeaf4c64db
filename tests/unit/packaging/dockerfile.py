"""A small reader of the Dockerfile's stages: enough to check what the images promise without Docker."""

from __future__ import annotations

import dataclasses
import re
import shlex

_FROM = re.compile(r"^FROM\s+(?P<image>\S+)(?:\s+AS\s+(?P<name>\S+))?$", re.I)


@dataclasses.dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (INSTRUCTION, args)

    def args(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def labels(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.args("LABEL"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                out[key] = value
        return out


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined and comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def parse(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """(global ARG defaults, stages by name) of a Dockerfile."""
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical_lines(text):
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = _FROM.match(line)
            assert match, line
            stage = Stage(match["name"] or str(len(stages)), match["image"])
            stages[stage.name] = stage
        elif stage is None:
            if instruction == "ARG":
                key, _, value = args.partition("=")
                global_args[key] = value
        else:
            stage.instructions.append((instruction, args.strip()))
    return global_args, stages
