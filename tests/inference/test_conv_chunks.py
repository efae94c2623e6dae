"""The CNN front end in time chunks (``inference/blocks/conv_chunks.py``) gives the frames of the
whole recording in one piece, in float32 and bf16, with far less memory on long inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recycle_distill.inference.blocks import conv_chunks, conv_runner
from recycle_distill.lab.profiling import peak_memory
from recycle_distill.students.blocks.feature_extractor import ConvFeatureExtractor

ARMHUBERT_CNN = [(128, 10, 5), (256, 1, 1)] + [(256, 3, 2)] * 4 + [(480, 1, 1)] + [(480, 2, 2)] * 2
BASE_CNN = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


def cnn(layers, seed=0, groups=None):
    torch.manual_seed(seed)
    model = ConvFeatureExtractor(layers).eval()
    with torch.no_grad():
        norm = model.conv_layers[0].norm if hasattr(model.conv_layers[0], "norm") else None
        for module in model.modules():
            if isinstance(module, nn.GroupNorm):  # not the identity affine map of a fresh norm
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
                if groups:
                    module.num_groups = groups
    return model, norm


def whole(model, waves):
    with torch.inference_mode():
        return torch.cat([conv_runner._forward_channels_last(model.conv_layers, w[None]) for w in waves])


def chunked(model, waves, monkeypatch, chunk_bytes):
    monkeypatch.setattr(conv_chunks, "TIME_CHUNKS_FROM_BYTES", 0)
    monkeypatch.setattr(conv_chunks, "CHUNK_ACTIVATION_BYTES", chunk_bytes)
    monkeypatch.setattr(conv_runner, "LARGE_TENSOR_BYTES", 0)
    with torch.inference_mode():
        return conv_runner.run_conv_blocks(model.conv_layers, waves)


# float32: the GroupNorm statistics (float64 sums against torch's float32 kernel) move each
# normalised value by ~1e-7 of its size, and six convolutions of O(100)-term sums carry it.
@pytest.mark.parametrize("layers", [ARMHUBERT_CNN, BASE_CNN], ids=["armhubert", "hubert-base"])
@pytest.mark.parametrize("chunk_bytes", [1, 300_000, 4_000_000], ids=["one frame", "a few frames", "large"])
def test_time_chunks_give_the_whole_recordings_frames(layers, chunk_bytes, monkeypatch):
    model, _ = cnn(layers)
    waves = torch.randn(2, 16000 * 2 + 777)
    want = whole(model, waves)
    got = chunked(model, waves, monkeypatch, chunk_bytes)
    assert got.shape == want.shape
    scale = want.abs().max()
    assert ((got - want).abs().max() / scale).item() < 1e-5


def test_groups_of_several_channels_use_each_groups_statistics(monkeypatch):
    model, _ = cnn(ARMHUBERT_CNN, groups=8)  # 16 channels a group
    waves = torch.randn(1, 16000 + 123)
    want = whole(model, waves)
    assert ((chunked(model, waves, monkeypatch, 200_000) - want).abs().max() / want.abs().max()).item() < 1e-5


def test_bf16_chunks_stay_within_bf16_rounding_of_the_whole(monkeypatch):
    model, _ = cnn(ARMHUBERT_CNN)
    model = model.to(torch.bfloat16)
    waves = torch.randn(1, 16000 * 2).to(torch.bfloat16)
    want = whole(model, waves).float()
    got = chunked(model, waves, monkeypatch, 300_000).float()
    # Both round every block's output to bf16 (2^-9); the statistics differ in float32 rounding only.
    assert ((got - want).norm() / want.norm()).item() < 1e-2


def test_a_stack_with_a_norm_past_the_first_block_is_not_chunked():
    model, _ = cnn(ARMHUBERT_CNN)
    parts = [conv_runner.block_parts(b) for b in model.conv_layers]
    assert conv_chunks.chunkable(parts)
    parts[2] = parts[2] + [nn.GroupNorm(1, 256)]
    assert not conv_chunks.chunkable(parts)
    padded = [conv_runner.block_parts(b) for b in ConvFeatureExtractor([(8, 3, 1)]).conv_layers]
    padded[0][0].padding = (1,)
    assert not conv_chunks.chunkable(padded)


def test_field_and_hop_of_the_wav2vec2_cnn():
    convs = [nn.Conv1d(1, 1, k, s) for _, k, s in BASE_CNN]
    assert conv_chunks.field_and_hop(convs) == (400, 320)  # 25 ms windows every 20 ms


def test_long_inputs_need_a_fraction_of_the_memory():
    model, _ = cnn(ARMHUBERT_CNN)
    waves = torch.randn(1, 16000 * 45)
    with torch.inference_mode():
        in_one_piece = peak_memory(lambda: conv_runner._forward_channels_last(model.conv_layers, waves)).peak_bytes
        in_chunks = peak_memory(lambda: conv_runner.run_conv_blocks(model.conv_layers, waves)).peak_bytes
    largest = conv_runner._largest_activation(model.conv_layers, waves)
    assert largest > conv_chunks.TIME_CHUNKS_FROM_BYTES  # the default threshold chunks 45 s here
    output = 480 * (waves.shape[1] // 320) * 4
    assert in_chunks < output + 4 * conv_chunks.CHUNK_ACTIVATION_BYTES < in_one_piece / 2
