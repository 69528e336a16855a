import pytest
import torch
from conftest import randomize_
from transformers import PoolFormerConfig, PoolFormerForImageClassification

from riformer_hf import RIFormerConfig, RIFormerForImageClassification
from riformer_hf.convert.poolformer import from_poolformer, poolformer_key_to_riformer
from riformer_hf.distillation.teachers import (
    PoolFormerImitationAdapter,
    check_isomorphic,
    default_imitation_blocks,
    is_isomorphic,
)

LABELS = {"id2label": {0: "cat", 1: "dog", 2: "fish"}, "label2id": {"cat": 0, "dog": 1, "fish": 2}}



def tiny_poolformer(seed=0, dtype=torch.float32, **kwargs) -> PoolFormerForImageClassification:
    config = PoolFormerConfig(depths=(1, 2, 2, 1), hidden_sizes=(8, 16, 24, 32), **{**LABELS, **kwargs})
    torch.manual_seed(seed)
    return randomize_(PoolFormerForImageClassification(config).to(dtype), seed=seed).eval()


def matching_student(**kwargs) -> RIFormerForImageClassification:
    config = RIFormerConfig(depths=(1, 2, 2, 1), hidden_sizes=(8, 16, 24, 32), **{**LABELS, **kwargs})
    return RIFormerForImageClassification(config)


# ---- isomorphism ----


def test_isomorphic_pair_passes():
    check_isomorphic(tiny_poolformer(), matching_student())
    assert is_isomorphic(tiny_poolformer().config, matching_student().config)


def test_every_mismatch_is_listed():
    student = RIFormerForImageClassification(
        RIFormerConfig(depths=(1, 1, 2, 1), hidden_sizes=(8, 16, 24, 40), mlp_ratio=2.0, patch_sizes=(4, 3, 3, 3))
    )
    with pytest.raises(ValueError) as error:
        check_isomorphic(tiny_poolformer(), student)
    message = str(error.value)
    for expected in (
        "depths: PoolFormer [1, 2, 2, 1] vs RIFormer [1, 1, 2, 1]",
        "hidden_sizes: PoolFormer [8, 16, 24, 32] vs RIFormer [8, 16, 24, 40]",
        "mlp_ratio: PoolFormer 4.0 vs RIFormer 2.0",
        "patch_sizes: PoolFormer [7, 3, 3, 3] vs RIFormer [4, 3, 3, 3]",
    ):
        assert expected in message
    assert "strides" not in message and "from_poolformer" in message
    assert not is_isomorphic(tiny_poolformer(), student)


def test_non_poolformer_teacher_is_rejected():
    other = matching_student()
    with pytest.raises(ValueError, match="not a PoolFormer"):
        check_isomorphic(other, matching_student())
    with pytest.raises(ValueError, match="not a RIFormer"):
        check_isomorphic(tiny_poolformer(), tiny_poolformer())


def test_default_imitation_blocks_are_stage_ends():
    assert default_imitation_blocks((2, 2, 6, 2)) == [1, 3, 9, 11]
    assert default_imitation_blocks((1, 2, 2, 1)) == [0, 2, 4, 5]


# ---- the hook adapter ----


def reference_block_tensors(poolformer, pixel_values):
    """Every block's pooling-mixer output and block output, computed by running the layers by hand."""
    encoder = poolformer.poolformer.encoder
    mixers, outputs = [], []
    hidden = pixel_values
    for embedding, layers in zip(encoder.patch_embeddings, encoder.block):
        hidden = embedding(hidden)
        for layer in layers:
            normed = layer.before_norm(hidden)
            mixers.append(torch.nn.functional.avg_pool2d(normed, 3, 1, 1, count_include_pad=False) - normed)
            hidden = layer(hidden)[0]
            outputs.append(hidden)
    return mixers, outputs


def test_adapter_collects_mixer_and_block_outputs_of_chosen_blocks():
    poolformer = tiny_poolformer()
    pixels = torch.randn(2, 3, 64, 48)
    adapter = PoolFormerImitationAdapter(poolformer, blocks=[0, 3, 5])
    with torch.no_grad(), adapter.capture() as states:
        logits = poolformer(pixels).logits
    mixers, outputs = reference_block_tensors(poolformer, pixels)
    assert len(states.mixer_states) == len(states.block_states) == 3
    for position, block in enumerate([0, 3, 5]):
        torch.testing.assert_close(states.mixer_states[position], mixers[block], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(states.block_states[position], outputs[block], rtol=1e-6, atol=1e-6)
    # the block output of the last block is what the head reads
    torch.testing.assert_close(poolformer.classifier(poolformer.norm(states.block_states[-1]).mean((-2, -1))), logits)


def test_adapter_defaults_to_stage_ends_and_hooks_only_inside_capture():
    poolformer = tiny_poolformer()
    adapter = PoolFormerImitationAdapter(poolformer)
    assert adapter.blocks == [0, 2, 4, 5]
    layers = [layer for stage in poolformer.poolformer.encoder.block for layer in stage]

    def hook_count():
        return sum(len(layer._forward_hooks) + len(layer.pooling._forward_hooks) for layer in layers)

    assert hook_count() == 0
    with adapter.capture():
        assert hook_count() == 8  # two per imitated block, none on the others
        assert all(len(layers[i]._forward_hooks) == 0 for i in (1, 3))
        poolformer(torch.randn(1, 3, 32, 32))
    assert hook_count() == 0
    with pytest.raises(RuntimeError, match="did not run"), adapter.capture():  # hooks go even when nothing ran
        pass
    assert hook_count() == 0


def test_adapter_rejects_bad_inputs():
    with pytest.raises(TypeError, match="PoolFormer"):
        PoolFormerImitationAdapter(matching_student())
    with pytest.raises(ValueError, match="out of range"):
        PoolFormerImitationAdapter(tiny_poolformer(), blocks=[6])


# ---- partial initialisation (from_poolformer) ----


def test_from_poolformer_copies_every_tensor_and_sets_identity_mixers():
    poolformer = tiny_poolformer(seed=3)
    student = from_poolformer(poolformer, drop_path_rate=0.05)
    pool_state = poolformer.state_dict()
    student_state = student.state_dict()
    copied = {poolformer_key_to_riformer(k): k for k in pool_state}
    assert set(copied) <= set(student_state), set(copied) - set(student_state)
    for key, value in student_state.items():
        if ".token_mixer." in key:
            expected = torch.ones_like(value) if key.endswith(".scale") else torch.zeros_like(value)
            assert torch.equal(value, expected), key
        else:
            assert key in copied, f"{key} neither copied nor a token mixer"
            assert torch.equal(value, pool_state[copied[key]]), key
    assert len(copied) == len(pool_state)  # the mapping is one to one
    assert student.config.drop_path_rate == 0.05 and student.config.id2label == poolformer.config.id2label
    assert not student.config.reparameterized
    check_isomorphic(poolformer, student)


def test_from_poolformer_equals_poolformer_with_a_zero_token_mixer():
    """Identity affine ⇒ mixer output 0: the student computes PoolFormer with its pooling mixer switched off."""
    poolformer = tiny_poolformer(seed=4, dtype=torch.float64)
    student = from_poolformer(poolformer).eval()
    assert student.dtype == torch.float64
    handles = [
        layer.pooling.register_forward_hook(lambda module, args, output: torch.zeros_like(output))
        for stage in poolformer.poolformer.encoder.block
        for layer in stage
    ]
    pixels = torch.randn(2, 3, 40, 40, dtype=torch.float64)
    with torch.no_grad():
        expected = poolformer(pixels).logits
        for handle in handles:
            handle.remove()
        with_pooling = poolformer(pixels).logits
        got = student(pixels, output_block_states=True)
    torch.testing.assert_close(got.logits, expected, rtol=1e-12, atol=1e-12)
    assert (with_pooling - expected).abs().max() > 1e-3  # the pooling mixer does matter
    assert all(m.abs().max() == 0 for m in got.mixer_states)


def test_from_poolformer_loads_from_a_path(tmp_path):
    poolformer = tiny_poolformer(seed=5)
    poolformer.save_pretrained(tmp_path / "pool")
    student = from_poolformer(str(tmp_path / "pool"))
    assert torch.equal(student.classifier.weight, poolformer.classifier.weight)


def test_from_poolformer_refuses_architecture_overrides():
    with pytest.raises(ValueError, match="depths"):
        from_poolformer(tiny_poolformer(), depths=(1, 1, 1, 1))
