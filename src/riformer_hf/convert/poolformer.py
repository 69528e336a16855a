"""transformers' PoolFormer → a RIFormer student initialised from it (the paper's initialisation), and the one map
between the two families: config fields in `ARCHITECTURE_FIELDS`, tensor names in `poolformer_key_to_riformer`.

A PoolFormer and a RIFormer that agree on `ARCHITECTURE_FIELDS` map block to block with feature maps of the same
shapes; the student copies everything but its affine token mixers, which start as the identity.
"""

from transformers import PoolFormerConfig, PoolFormerForImageClassification
from transformers.utils import logging

from ..errors import MissingInputError, UserError
from ..loading import load_pretrained
from ..models.riformer import RIFormerConfig, RIFormerForImageClassification

logger = logging.get_logger(__name__)

# The config fields PoolFormer and RIFormer share under the same names: they fix the layout.
ARCHITECTURE_FIELDS = (
    "num_channels", "depths", "hidden_sizes", "mlp_ratio", "patch_sizes", "strides", "padding", "hidden_act",
)


def architecture(config) -> dict:
    """The `ARCHITECTURE_FIELDS` of a PoolFormer or RIFormer config, lists as tuples."""
    return {name: tuple(v) if isinstance(v := getattr(config, name), list) else v for name in ARCHITECTURE_FIELDS}


def poolformer_config(config: RIFormerConfig, **overrides) -> PoolFormerConfig:
    """The transformers PoolFormer with a RIFormer's layout (same stem, stages, MLPs, layer-scale init, labels)."""
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in architecture(config).items()}
    return PoolFormerConfig(
        **fields, layer_scale_init_value=config.layer_scale_init_value, id2label=dict(config.id2label),
        label2id=dict(config.label2id), **overrides,
    )


def poolformer_key_to_riformer(key: str) -> str:
    """Name of the RIFormer tensor that takes a transformers PoolFormer tensor (classification model keys)."""
    parts = key.split(".")
    if parts[:3] == ["poolformer", "encoder", "patch_embeddings"]:  # ….patch_embeddings.{i}.projection.{weight,bias}
        return f"riformer.encoder.stages.{parts[3]}.patch_embeddings.{parts[5]}"
    if parts[:3] == ["poolformer", "encoder", "block"]:  # poolformer.encoder.block.{s}.{j}.<module>...
        stage, index, rest = parts[3], parts[4], ".".join(parts[5:])
        for old, new in (("before_norm", "norm1"), ("after_norm", "norm2"), ("output.conv1", "mlp.fc1"),
                         ("output.conv2", "mlp.fc2")):
            if rest.startswith(old + "."):
                rest = new + rest[len(old):]
        return f"riformer.encoder.stages.{stage}.blocks.{index}.{rest}"
    return key  # norm.*, classifier.*


def load_poolformer(name_or_path, flag: str = "--model_name_or_path") -> PoolFormerForImageClassification:
    """A transformers PoolFormer classifier from a folder or Hub id; anything else is refused before its weights are
    read (loading another model type as a PoolFormer would give random weights with a warning)."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(name_or_path)
    except OSError as error:
        raise MissingInputError(f"{flag} {name_or_path}: {' '.join(str(error).split())}") from None
    model_type = config.get("model_type")
    if model_type != "poolformer":
        raise UserError(
            f"{flag} {name_or_path} holds a {model_type!r} model, not a PoolFormer (config.json model_type "
            "'poolformer'): give a transformers PoolFormer image classifier."
        )
    return load_pretrained(PoolFormerForImageClassification, name_or_path, flag)


def from_poolformer(poolformer_or_path, *, id2label=None, label2id=None, **config_overrides
                    ) -> RIFormerForImageClassification:
    """A training-form RIFormer initialised from an isomorphic PoolFormer, as in the paper.

    Copies the stem, downsampling convs, norms, MLPs, layer scales, final norm and classifier of a transformers
    `PoolFormerForImageClassification` (an instance, or a path / Hub id to load one); the affine token mixers start
    as identity (scale 1, shift 0). `config_overrides` may change training fields such as `drop_path_rate` but not
    the architecture.

    `id2label` (and `label2id`) name the student's classes. When the PoolFormer predicts another number of classes
    (an ImageNet PoolFormer for your own data), the backbone is copied as above and the classifier starts afresh
    (the model's initialisation), with a log line; as many classes keep the PoolFormer's classifier under these
    names (e.g. ImageNet's folder names for its words).
    """
    poolformer = poolformer_or_path
    if not isinstance(poolformer, PoolFormerForImageClassification):
        poolformer = load_poolformer(poolformer_or_path)
    pool_config = poolformer.config
    if not pool_config.use_layer_scale:
        raise UserError("from_poolformer needs a PoolFormer with layer scales (config.use_layer_scale=True).")
    layout = {**architecture(pool_config), "reparameterized": False}
    clashes = sorted(set(layout) & set(config_overrides))
    if clashes:
        raise UserError(
            f"from_poolformer takes the architecture from the PoolFormer; do not override {', '.join(clashes)}."
        )
    labels = {"id2label": dict(pool_config.id2label), "label2id": dict(pool_config.label2id)}
    new_head = False
    if id2label is not None:
        id2label = {int(k): v for k, v in id2label.items()}
        new_head = pool_config.num_labels != len(id2label)
        labels = {"id2label": id2label, "label2id": dict(label2id or {v: k for k, v in id2label.items()})}
    config = RIFormerConfig(
        **layout, layer_scale_init_value=pool_config.layer_scale_init_value, **labels, **config_overrides
    )
    model = RIFormerForImageClassification(config).to(poolformer.dtype)
    state = {poolformer_key_to_riformer(k): v for k, v in poolformer.state_dict().items()}
    if new_head:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    leftover = [k for k in missing if ".token_mixer." not in k and not (new_head and k.startswith("classifier."))]
    if leftover or unexpected:
        raise RuntimeError(f"PoolFormer → RIFormer mapping failed: missing {leftover}, unexpected {unexpected}.")
    if new_head:
        logger.warning(
            f"The PoolFormer predicts {pool_config.num_labels} classes, the student {config.num_labels}: the "
            "student's backbone is the PoolFormer's and its head is new (classifier.weight, classifier.bias "
            "initialised afresh)."
        )
    return model


def convert_poolformer(name_or_path, output_dir, drop_path_rate: float | None = None) -> RIFormerForImageClassification:
    """`from_poolformer` of a PoolFormer folder or Hub id, saved to `output_dir` with the PoolFormer's image
    processor."""
    from ..data.preprocessing import load_image_processor

    overrides = {} if drop_path_rate is None else {"drop_path_rate": drop_path_rate}
    model = from_poolformer(name_or_path, **overrides)
    model.save_pretrained(output_dir)
    processor = load_image_processor(name_or_path)
    if processor is not None:
        processor.save_pretrained(output_dir)
    else:
        logger.warning(f"{name_or_path} has no image processor: the converted model is saved without one.")
    return model


__all__ = [
    "ARCHITECTURE_FIELDS",
    "architecture",
    "convert_poolformer",
    "from_poolformer",
    "load_poolformer",
    "poolformer_config",
    "poolformer_key_to_riformer",
]
