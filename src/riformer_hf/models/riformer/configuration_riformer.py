"""RIFormer model configuration."""

from huggingface_hub.dataclasses import strict
from transformers.backbone_utils import BackboneConfigMixin
from transformers.configuration_utils import PreTrainedConfig

# The five models of the paper (Table 1). Drop path 0.1 for every size.
RIFORMER_PRESETS = {
    "s12": {"depths": (2, 2, 6, 2), "hidden_sizes": (64, 128, 320, 512), "layer_scale_init_value": 1e-5},
    "s24": {"depths": (4, 4, 12, 4), "hidden_sizes": (64, 128, 320, 512), "layer_scale_init_value": 1e-5},
    "s36": {"depths": (6, 6, 18, 6), "hidden_sizes": (64, 128, 320, 512), "layer_scale_init_value": 1e-6},
    "m36": {"depths": (6, 6, 18, 6), "hidden_sizes": (96, 192, 384, 768), "layer_scale_init_value": 1e-6},
    "m48": {"depths": (8, 8, 24, 8), "hidden_sizes": (96, 192, 384, 768), "layer_scale_init_value": 1e-6},
}


@strict
class RIFormerConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a RIFormer model: a MetaFormer whose token mixer is a per-channel affine during training and is
    folded into the first norm of each block at deploy time. Defaults give RIFormer-S12.

    Args:
        num_channels (`int`): channels of the input image.
        depths (`tuple[int]`): blocks per stage.
        hidden_sizes (`tuple[int]`): channels per stage.
        mlp_ratio (`float`): MLP hidden width as a multiple of the stage width.
        patch_sizes, strides, padding (`tuple[int]`): kernel, stride and padding of the stem (index 0) and of the
            downsampling convolutions in front of stages 2-4.
        hidden_act (`str`): MLP activation (`"gelu"` is the exact erf GELU).
        norm_eps (`float`): epsilon of the one-group GroupNorms.
        layer_scale_init_value (`float`): initial value of the per-channel layer scales.
        drop_path_rate (`float`): stochastic depth of the last block; it rises linearly from 0 over the blocks.
        initializer_range (`float`): std of the truncated normal used for conv and linear weights.
        reparameterized (`bool`): build the deploy form (token mixer folded into `norm_reparam`).
        out_features, out_indices: stages returned by [`RIFormerBackbone`] (`"stem"`, `"stage1"` … `"stage4"`).
    """

    model_type = "riformer"

    num_channels: int = 3
    depths: list[int] | tuple[int, ...] = (2, 2, 6, 2)
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 320, 512)
    mlp_ratio: float | int = 4.0
    patch_sizes: list[int] | tuple[int, ...] = (7, 3, 3, 3)
    strides: list[int] | tuple[int, ...] = (4, 2, 2, 2)
    padding: list[int] | tuple[int, ...] = (2, 1, 1, 1)
    hidden_act: str = "gelu"
    norm_eps: float = 1e-5
    layer_scale_init_value: float = 1e-5
    drop_path_rate: float | int = 0.1
    initializer_range: float = 0.02
    reparameterized: bool = False
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        num_stages = len(self.depths)
        for name in ("hidden_sizes", "patch_sizes", "strides", "padding"):
            if len(getattr(self, name)) != num_stages:
                raise ValueError(
                    f"RIFormerConfig.{name} has {len(getattr(self, name))} entries but depths has {num_stages}: "
                    "give one value per stage."
                )
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, num_stages + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "RIFormerConfig":
        """Config of one of the paper's models (`s12`, `s24`, `s36`, `m36`, `m48`); `kwargs` override fields."""
        key = name.lower().removeprefix("riformer-").removeprefix("riformer_")
        if key not in RIFORMER_PRESETS:
            raise ValueError(f"Unknown RIFormer preset {name!r}; choose one of {', '.join(RIFORMER_PRESETS)}.")
        return cls(**{**RIFORMER_PRESETS[key], **kwargs})


RIFormerConfig.register_for_auto_class()  # `auto_map` in the saved config.json

__all__ = ["RIFORMER_PRESETS", "RIFormerConfig"]
