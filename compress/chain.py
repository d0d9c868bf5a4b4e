"""Composite methods: registered methods run one after another, each on the last variant of
the method before it. A composite is itself a method (it has `Settings` and `run`), so it is
registered in `methods.METHODS` with one line and the CLI, the sweep and the Python API treat
it like any other:

    "dynamic-prune+fuse": Composite("dynamic-prune", "layer-fusion", help="...")

Its `Settings` holds one field per step, named by the step's method and typed by that
method's own `Settings`; `Settings.preset(name, **overrides)` takes the preset `name` of every
step with that step's overrides on top:

    Settings.preset("cpu", **{"dynamic-prune": {"epochs": 2}, "layer-fusion": {}})

The steps stay independent modules: only this module knows they run in a row (the methods
never import each other). Nothing heavy is imported here, so the registry stays cheap; the
registry hands a composite its step lookup (`methods.get_method`), so this module does not
import the registry back.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from fpgaslim.core.errors import ConfigError, UnknownNameError


class CompositeSettings(BaseModel):
    """Base of a composite's settings: one field per step (its method's Settings)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    STEPS: ClassVar[tuple[str, ...]] = ()
    STEP_SETTINGS: ClassVar[dict[str, type[BaseModel]]] = {}  # step -> its Settings class
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}  # preset name -> {} (each step's own)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "CompositeSettings":
        """Preset `name` of every step, with `overrides[step]` (a dict of that step's fields)
        on top; an unknown step name or field is an error naming it."""
        if name not in cls.PRESETS:
            raise UnknownNameError("preset", name, list(cls.PRESETS))
        data: dict[str, Any] = dict(overrides)
        for step in cls.STEPS:
            over = overrides.get(step, {})
            if isinstance(over, BaseModel):
                over = over.model_dump(by_alias=True)
            if isinstance(over, dict):
                base = cls.STEP_SETTINGS[step].preset(name).model_dump(by_alias=True)
                data[step] = {**base, **over}
        return cls(**data)

    def step(self, method: str) -> BaseModel:
        """The settings of step `method`."""
        return getattr(self, _field(method))


def _field(method: str) -> str:
    return method.replace("-", "_").replace("+", "_")


class Composite:
    """A method made of registered methods run in a row (see the module docstring)."""

    def __init__(self, *steps: str, help: str = "") -> None:
        if len(steps) < 2:
            raise ValueError("a composite method needs at least two steps")
        self.STEPS = tuple(steps)
        self.__doc__ = help or f"{' -> '.join(steps)}, each on the last variant of the one before"
        self._settings: type[CompositeSettings] | None = None
        self._lookup: Callable[[str], Any] | None = None

    def with_lookup(self, lookup: Callable[[str], Any]) -> "Composite":
        """Set by the registry (`methods.get_method`): how a step name becomes a method."""
        self._lookup = lookup
        return self

    def _step(self, name: str) -> Any:
        if self._lookup is None:
            raise ConfigError(f"{self!r} is not registered: add it to compress/methods.py "
                              "METHODS and get it with methods.get_method")
        return self._lookup(name)

    def __repr__(self) -> str:
        return f"Composite({', '.join(map(repr, self.STEPS))})"

    @property
    def NEEDS(self) -> tuple[str, ...]:  # noqa: N802 (a method module's attribute)
        """What its steps need from a model, together."""
        return tuple(dict.fromkeys(n for s in self.STEPS for n in self._step(s).NEEDS))

    @property
    def Settings(self) -> type[CompositeSettings]:  # noqa: N802 (a method module's attribute)
        """Built on first use (it imports the step modules)."""
        if self._settings is None:
            classes = {s: self._step(s).Settings for s in self.STEPS}
            presets = set.intersection(*(set(c.PRESETS) for c in classes.values()))
            fields: dict[str, Any] = {
                _field(s): (c, Field(default_factory=c, alias=s)) for s, c in classes.items()}
            cls = create_model("Settings", __base__=CompositeSettings,
                               __doc__=f"Settings of {' -> '.join(self.STEPS)}: one entry per "
                                       "step, named by its method.", **fields)
            cls.STEPS, cls.STEP_SETTINGS = self.STEPS, classes
            cls.PRESETS = {p: {} for p in sorted(presets)}
            self._settings = cls
        return self._settings

    def run(self, run: Any, parent: str, data: Any, settings: CompositeSettings, *,
            progress: bool | None = None) -> list:
        """Every step on the last variant of the step before; returns all their variants.
        A step that makes no variant ends the chain with an error when a step follows it.
        Each step resumes by its own rules, so a rerun redoes nothing finished."""
        variants: list = []
        source = parent
        for i, step in enumerate(self.STEPS):
            made = self._step(step).run(run, source, data, settings.step(step),
                                        progress=progress)
            variants += made
            if not made and i + 1 < len(self.STEPS):
                raise ConfigError(f"{step} produced no variant from {source!r}; nothing for "
                                  f"{self.STEPS[i + 1]} to work on")
            if made:
                source = made[-1].id
        return variants
