"""Architectures as data. A checkpoint stores its architecture record next to its weights, so a
pruned, fused or reduced model is rebuilt exactly from the record: variants are data, not
subclasses (timm style)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .quant import SUPPORTED_BITS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BitWidths(_Strict):
    """Weight/activation bits; the first and last layers usually keep more."""

    weight: int = 4
    act: int = 4
    first_weight: int = 8
    last_weight: int = 8

    @field_validator("weight", "act", "first_weight", "last_weight")
    @classmethod
    def _supported(cls, v: int) -> int:
        if v not in SUPPORTED_BITS:
            raise ValueError(f"bit width {v} not supported; use one of {list(SUPPORTED_BITS)}")
        return v

    @property
    def tag(self) -> str:
        return f"w{self.weight}a{self.act}"


class BlockSpec(_Strict):
    """A basic residual block; `mid` is its prunable inner width."""

    in_ch: int
    mid: int
    out_ch: int
    stride: int = 1
    removed: bool = False  # layer fusion / recursive reduction: the block became x -> x
    omega: bool = False  # learned importance: x + omega * F(x)

    @property
    def removable(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch


class ResNetArch(_Strict):
    kind: Literal["resnet"] = "resnet"
    name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    bits: BitWidths = BitWidths()
    stem: int
    blocks: tuple[BlockSpec, ...]
    stage_of: tuple[int, ...]  # stage index of each block

    def with_blocks(self, blocks: list[BlockSpec]) -> "ResNetArch":
        return self.model_copy(update={"blocks": tuple(blocks)})


class ConvSpec(_Strict):
    kind: Literal["conv"] = "conv"
    out_ch: int
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    bias: bool = False
    bn: bool = True


class PoolSpec(_Strict):
    kind: Literal["maxpool"] = "maxpool"
    size: int = 2


class AvgPoolSpec(_Strict):
    """Average pooling without padding (FINN's pool layer has none): a global pool before the
    classifier of a ResNet turned plain, or what a pruned downsampling ResConv layer keeps."""

    kind: Literal["avgpool"] = "avgpool"
    kernel: int
    stride: int


class PlainArch(_Strict):
    """Residual-free feed-forward CNN: the CNV family and ResConv-fused networks."""

    kind: Literal["plain"] = "plain"
    name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    bits: BitWidths = BitWidths()
    layers: tuple[Annotated[Union[ConvSpec, PoolSpec, AvgPoolSpec], Field(discriminator="kind")],
                  ...]
    hidden: tuple[int, ...] = ()  # fully-connected hidden widths before the classifier
    head_bias: bool = False


class UserBits(_Strict):
    """What a user's model says about its bits (free text: fpgaslim did not choose them)."""

    label: str = "custom"

    @property
    def tag(self) -> str:
        return self.label


class UserArch(_Strict):
    """A model fpgaslim did not design (compress/models/user.py): a factory reference
    (`path/to/file.py:fn` or `package.module:fn`) with its keyword arguments, re-created before
    loading a checkpoint's state dict; or a QONNX file imported as is (`source="qonnx"`: no
    PyTorch model). `pruned` replays a channel pruning on the factory's fresh model, then
    `removed_blocks` and `omega_blocks` the block edits (compress/models/blocks.py)."""

    kind: Literal["user"] = "user"
    name: str
    in_shape: tuple[int, ...]
    num_classes: int
    bits: UserBits = UserBits()
    source: Literal["factory", "module", "qonnx"] = "factory"
    factory: str | None = None
    kwargs: dict = Field(default_factory=dict)
    file_sha256: str | None = None  # the factory's .py file, or the imported QONNX file
    pruned: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (module name, removed out channels)
    # block methods on a model with residual_blocks() (compress/models/blocks.py): indices
    removed_blocks: tuple[int, ...] = ()  # became nn.Identity (layer fusion / importance)
    omega_blocks: tuple[int, ...] = ()  # x + omega * F(x) (layer importance)


Arch = Annotated[Union[ResNetArch, PlainArch, UserArch], Field(discriminator="kind")]
