"""GFNet-H (hierarchical Global Filter Network) configuration: RIFormer's logit teacher."""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

# The hierarchical GFNets of Rao et al. (NeurIPS 2021 / T-PAMI), as trained in raoyongming/GFNet (`main_gfnet.py`).
GFNET_PRESETS = {
    "gfnet-h-ti": {
        "depths": (3, 3, 10, 3), "hidden_sizes": (64, 128, 256, 512), "layer_scale_init_value": 1e-3,
        "drop_path_rate": 0.1,
    },
    "gfnet-h-s": {
        "depths": (3, 3, 10, 3), "hidden_sizes": (96, 192, 384, 768), "layer_scale_init_value": 1e-5,
        "drop_path_rate": 0.2,
    },
    "gfnet-h-b": {
        "depths": (3, 3, 27, 3), "hidden_sizes": (96, 192, 384, 768), "layer_scale_init_value": 1e-6,
        "drop_path_rate": 0.4,
    },
}


@strict
class GFNetConfig(PreTrainedConfig):
    r"""
    Configuration of a hierarchical GFNet (GFNet-H): a 4×4 stride-4 patch stem with a learned position embedding,
    2×2 stride-2 downsampling convolutions between stages, and blocks `x + ls * mlp(norm2(filter(norm1(x))))` whose
    token mixer is a learned global filter in the 2-D Fourier domain. Defaults give GFNet-H-Ti.

    Args:
        num_channels (`int`): channels of the input image.
        image_size (`int`): side of the square image the position embedding and the global filters are made for
            (token grid `image_size // (patch_size * 2**stage)` per stage). Other resolutions still work: the model
            then interpolates both (see [`GFNetModel`]).
        patch_size (`int`): kernel and stride of the stem convolution.
        depths (`tuple[int]`): blocks per stage.
        hidden_sizes (`tuple[int]`): channels per stage.
        mlp_ratio (`float`): MLP hidden width as a multiple of the stage width.
        hidden_act (`str`): MLP activation (`"gelu"` is the exact erf GELU).
        layer_norm_eps (`float`): epsilon of the LayerNorms.
        layer_scale_init_value (`float`): initial value of the per-channel layer scale of each block.
        drop_path_rate (`float`): stochastic depth of the last block; it rises linearly from 0 over the blocks.
        initializer_range (`float`): std of the position embedding, the linear weights and the filter weights.
    """

    model_type = "gfnet"

    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 4
    depths: list[int] | tuple[int, ...] = (3, 3, 10, 3)
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512)
    mlp_ratio: float | int = 4.0
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    layer_scale_init_value: float = 1e-3
    drop_path_rate: float | int = 0.1
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if len(self.hidden_sizes) != len(self.depths):
            raise ValueError(
                f"GFNetConfig.hidden_sizes has {len(self.hidden_sizes)} entries but depths has {len(self.depths)}: "
                "give one width per stage."
            )
        smallest_grid = self.image_size // (self.patch_size * 2 ** (len(self.depths) - 1))
        if smallest_grid < 1:
            raise ValueError(
                f"GFNetConfig.image_size={self.image_size} leaves no tokens in the last of {len(self.depths)} stages "
                f"(it needs at least patch_size * 2**{len(self.depths) - 1} = "
                f"{self.patch_size * 2 ** (len(self.depths) - 1)} pixels)."
            )
        super().__post_init__(**kwargs)

    @property
    def grid_sizes(self) -> list[int]:
        """Side of the token grid of each stage at `image_size`: the grid the weights are made for."""
        return [self.image_size // (self.patch_size * 2**stage) for stage in range(len(self.depths))]

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "GFNetConfig":
        """Config of a published GFNet-H (`gfnet-h-ti`, `gfnet-h-s`, `gfnet-h-b`); `kwargs` override fields."""
        key = name.lower().replace("_", "-")
        key = key if key.startswith("gfnet-") else f"gfnet-{key}"
        if key not in GFNET_PRESETS:
            raise ValueError(f"Unknown GFNet preset {name!r}; choose one of {', '.join(GFNET_PRESETS)}.")
        return cls(**{**GFNET_PRESETS[key], **kwargs})


GFNetConfig.register_for_auto_class()

__all__ = ["GFNET_PRESETS", "GFNetConfig"]
