"""Options declared once: a name, a type, a default, a help text and a check.

Methods declare their options (``Method.options``), the engine its own (the fields of
:class:`vprob.config.TrainConfig`); the ``vprob`` command line, the saved ``config.json`` and the
validation of a configuration are all generated from these declarations, so a new option is one line.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Check = Callable[[Any], bool]


@dataclass(frozen=True)
class Option:
    """One configurable value.

    Args:
        name: Python name (``head_hidden``); the command-line flag is ``--head-hidden``.
        type: ``int``, ``float``, ``str`` or ``bool``; for ``many=True`` the type of each item.
        default: used when nothing else sets it (``None``: unset / "automatic", if ``nullable``).
        help: one line for ``--help``.
        choices: the allowed values, if a closed set.
        check: a predicate on the (non-``None``) value, with ``requirement`` saying what it wants.
        nullable: ``None`` is a valid value.
        many: a tuple of values (``--knn-k 200 10``).
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    check: Check | None = None
    requirement: str = ""
    nullable: bool = False
    many: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def validate(self, value: Any, owner: str = "") -> Any:
        """``value`` converted to the option's type, or a ValueError naming the option (and its owner)."""
        where = f" ({owner})" if owner else ""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"{self.name}{where} must be set, got None")
        if self.many:
            if isinstance(value, str | bytes) or not isinstance(value, Sequence | tuple | list):
                raise ValueError(f"{self.name}{where} must be a list of {self.type.__name__}, got {value!r}")
            return tuple(self._one(item, where) for item in value)
        return self._one(value, where)

    def _one(self, value: Any, where: str) -> Any:
        if self.type is bool:
            ok = isinstance(value, bool)
        elif self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.type is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, self.type)
        if not ok:
            raise ValueError(
                f"{self.name}{where} must be a{'n' if self.type is int else ''} "
                f"{self.type.__name__}, got {value!r}"
            )
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name}{where} must be one of {self.choices}, got {value!r}")
        if self.check is not None and not self.check(value):
            raise ValueError(f"{self.name}{where} must be {self.requirement}, got {value!r}")
        return value


def positive(name: str, type: type, default: Any, help: str, **kwargs) -> Option:
    """An option whose value must be > 0."""
    return Option(name, type, default, help, check=lambda v: v > 0, requirement="> 0", **kwargs)


def non_negative(name: str, type: type, default: Any, help: str, **kwargs) -> Option:
    """An option whose value must be >= 0."""
    return Option(name, type, default, help, check=lambda v: v >= 0, requirement=">= 0", **kwargs)


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    options: Iterable[Option],
    help_suffix: dict[str, str] | None = None,
) -> None:
    """One flag per option, defaulting to ``None`` (= "not given": the configuration's own default then
    applies, and only given flags override a saved run's values)."""
    for option in options:
        help = option.help + (help_suffix or {}).get(option.name, "")
        if option.default is not None and option.type is not bool:
            help += f" (default: {option.default})"
        if option.type is bool:
            parser.add_argument(option.flag, action=argparse.BooleanOptionalAction, default=None, help=help)
            continue
        parser.add_argument(
            option.flag,
            type=_parse(option),
            default=None,
            help=help,
            choices=option.choices,
            nargs="+" if option.many else None,
            metavar=None if option.choices else option.name.upper(),
        )


def _parse(option: Option) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if option.nullable and text.lower() == "none":
            return None
        try:
            value = option.type(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {option.type.__name__}, got {text!r}") from None
        if option.check is not None and not option.check(value):
            raise argparse.ArgumentTypeError(f"must be {option.requirement}, got {text}")
        return value

    parse.__name__ = option.type.__name__
    return parse


def given(args: argparse.Namespace, options: Iterable[Option]) -> dict[str, Any]:
    """The options the command line gave (flags left out are absent, not ``None``)."""
    return {o.name: getattr(args, o.name) for o in options if getattr(args, o.name, None) is not None}
