"""Converters: published mmpretrain RIFormer and official GFNet-H checkpoints, and transformers PoolFormers (the paper's
initialisation), into folders the Auto classes load."""

from .checkpoints import load_checkpoint, unwrap_state_dict
from .gfnet import convert_gfnet, gfnet_key_table, infer_gfnet_config
from .mmpretrain import convert_mmpretrain_riformer, infer_riformer_config, mmpretrain_riformer_key_table
from .poolformer import convert_poolformer, from_poolformer, poolformer_config, poolformer_key_to_riformer

__all__ = [
    "convert_gfnet",
    "convert_mmpretrain_riformer",
    "convert_poolformer",
    "from_poolformer",
    "gfnet_key_table",
    "infer_gfnet_config",
    "infer_riformer_config",
    "load_checkpoint",
    "mmpretrain_riformer_key_table",
    "poolformer_config",
    "poolformer_key_to_riformer",
    "unwrap_state_dict",
]
