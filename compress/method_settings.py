"""One base for every compression method's settings.

A method's `Settings` subclasses `MethodSettings`: it inherits `extra="forbid"` (a misspelt
option is an error naming the field), the training fields every method has (`lr`,
`batch_size`, `seed`, `device`) and `preset(name, **overrides)`. Its presets are data, a
`PRESETS` dict of the fields that differ from the class defaults (Brevitas style: a preset is a
few attribute overrides, not code):

    class Settings(MethodSettings):
        PRESETS = {"cpu": {}, "full": {"epochs": 320, "patience": 20}}
        epochs: int = Field(4, ge=0)

    Settings.preset("full", seed=1)   # the "full" values, then the overrides

A method whose default differs redeclares that one field (resconv: `lr` 0.02).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from fpgaslim.core.errors import UnknownNameError

from .train import TrainSettings

Device = Literal["auto", "cpu", "cuda"]


class MethodSettings(BaseModel):
    """The fields and the preset contract shared by every method's `Settings`."""

    model_config = ConfigDict(extra="forbid")
    #: preset name -> the field values that differ from the defaults ("cpu" = the defaults)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"cpu": {}}
    #: fields that do not define a variant (where it trained): a finished variant made with
    #: another value is still finished (compress/variants.finished)
    UNKEYED: ClassVar[frozenset[str]] = frozenset({"device"})

    lr: float = Field(0.01, gt=0, description="learning rate of the fine-tuning (SGD, cosine "
                      "schedule)")
    batch_size: int = Field(64, ge=1, description="batch size of every training step")
    seed: int = Field(0, description="seed of the training")
    device: Device = Field("auto", description="where to train (auto: a GPU when present)")

    @classmethod
    def preset(cls, name: str, **overrides: Any):
        """The settings of preset `name` (see the class's PRESETS), with `overrides` on top;
        an unknown name lists the valid ones, a wrong field or value names the field."""
        if name not in cls.PRESETS:
            raise UnknownNameError("preset", name, list(cls.PRESETS))
        return cls(**{**cls.PRESETS[name], **overrides})

    def train_settings_for(self, epochs: int, **more: Any) -> TrainSettings:
        """TrainSettings of one training with this method's shared fields; `more` sets the
        rest (lr of a second phase, momentum, patience, restarts ...)."""
        return TrainSettings(**{"epochs": epochs, "lr": self.lr, "batch_size": self.batch_size,
                                "seed": self.seed, "device": self.device, **more})

