"""Stack-name rule for Wharf stacks (seed 002 adapted): {service}-{name}-{NNNN}-{level}.

- service: always ``wh`` (Wharf)
- name:    lowercase letters and digits, at least one character
- NNNN:    four digits, 0001-9999
- level:   prod | stage | dev | test
- total:   at most 32 characters (the limit seed 002 gives)

Importable by tests (tests/deploy/test_stackname.py) and used by deploy/aws/deploy.
Standard library only.
"""

from __future__ import annotations

import re
import sys
from typing import NamedTuple

SERVICE = "wh"
LEVELS = ("prod", "stage", "dev", "test")
MAX_LENGTH = 32

_NAME = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"[0-9]{4}")


class StackName(NamedTuple):
    service: str
    name: str
    number: str
    level: str

    def __str__(self) -> str:
        return f"{self.service}-{self.name}-{self.number}-{self.level}"

    @property
    def is_prod(self) -> bool:
        return self.level == "prod"


class InvalidStackName(ValueError):
    """Raised with every problem found, one per line."""

    def __init__(self, name: str, problems: list[str]):
        self.name = name
        self.problems = problems
        super().__init__(f"invalid stack name {name!r}:\n  - " + "\n  - ".join(problems))


def parse(name: str) -> StackName:
    """Return the parts of a valid stack name, or raise InvalidStackName listing every problem."""
    problems: list[str] = []
    if len(name) > MAX_LENGTH:
        problems.append(f"{len(name)} characters, the limit is {MAX_LENGTH}")
    parts = name.split("-")
    if len(parts) != 4:
        problems.append("expected four parts separated by '-': {service}-{name}-{NNNN}-{level}")
        raise InvalidStackName(name, problems)
    service, short, number, level = parts
    if service != SERVICE:
        problems.append(f"service must be {SERVICE!r}, got {service!r}")
    if not _NAME.fullmatch(short):
        problems.append(f"name must be lowercase letters and digits, got {short!r}")
    if not _NUMBER.fullmatch(number) or number == "0000":
        problems.append(f"stack number must be four digits 0001-9999, got {number!r}")
    if level not in LEVELS:
        problems.append(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    if problems:
        raise InvalidStackName(name, problems)
    return StackName(service, short, number, level)


def is_valid(name: str) -> bool:
    try:
        parse(name)
    except InvalidStackName:
        return False
    return True


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: stackname.py NAME", file=sys.stderr)
        sys.exit(2)
    try:
        print(parse(sys.argv[1]).level)
    except InvalidStackName as err:
        print(err, file=sys.stderr)
        sys.exit(1)
