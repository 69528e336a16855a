"""Converters for published checkpoints: mmpretrain RIFormer and official GFNet-H → folders the Auto classes load."""

from .checkpoints import load_checkpoint, unwrap_state_dict
from .gfnet import convert_gfnet, gfnet_key_table, infer_gfnet_config
from .mmpretrain import convert_mmpretrain_riformer, infer_riformer_config, mmpretrain_riformer_key_table

__all__ = [
    "convert_gfnet",
    "convert_mmpretrain_riformer",
    "gfnet_key_table",
    "infer_gfnet_config",
    "infer_riformer_config",
    "load_checkpoint",
    "mmpretrain_riformer_key_table",
    "unwrap_state_dict",
]
