"""Write a trained CIF recognizer as ONNX graphs: the folder :mod:`.onnx_format` describes.

Two graphs, traced like the students' export (``torch.onnx.export(..., dynamo=False)``, see
:mod:`recycle_distill.inference.onnx_export`, whose plain fp32 student copy, int8 quantization
and checks this reuses):

* the acoustic graph: our student (only one of ours: its graph is proven general by the
  students' ONNX tests), S3PRL's featurizer (the softmax of its layer weights, fixed; layer
  norm when it normalizes), the feature lengths S3PRL gives (``round(samples / rate)``, at most
  the frames), the encoder (its Conformer attention re-expressed with the same weights, since a
  trace of ``nn.MultiheadAttention`` freezes the example's length), the weight predictor and
  the inference CIF (:func:`.onnx_cif.static_inference_cif`, loop-free);
* the decoder step: :meth:`CifDecoder.step` with the key/value cache as two stacked tensors
  (empty at the first step) and ``log_softmax`` applied.

``dtype="int8"`` quantizes the MatMul/Gemm weights of both graphs (ONNX Runtime dynamic
quantization, as for the students) except the CIF's own integration, which multiplies two
activations and stays float32.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import time
import warnings
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recycle_distill.downstreams.cif_asr.decoder import DecoderCache
from recycle_distill.downstreams.cif_asr.model import CifRecognizer, lengths_to_padding_mask
from recycle_distill.downstreams.cif_asr.text import UnitVocabulary
from recycle_distill.inference.onnx_export import (
    DEFAULT_OPSET, _plain_fp32_copy, _quantize_int8, check_onnx_dtype, require_onnx,
)
from recycle_distill.recognizer.onnx_cif import cummin_as_scan, static_inference_cif
from recycle_distill.recognizer.onnx_format import (
    ACOUSTIC_FILE, DECODER_FILE, FORMAT_NAME, FORMAT_VERSION, GRAPHS, METADATA_FILE, OWN_FILES, VOCAB_FILE,
    is_our_folder,
)
from recycle_distill.util.atomic import OutputError, atomic_write_folder, check_output_folder
from recycle_distill.util.messages import plain
from recycle_distill.util.sample_rate import SAMPLE_RATE

logger = logging.getLogger(__name__)

__all__ = ["export_recognizer_onnx", "export_experiment_onnx", "featurizer_layer_weights", "check_recognizer_output",
           "AcousticGraph", "DecoderStepGraph"]

CIF_SCOPE = "cif"  # the acoustic graph's CIF submodule: its nodes are named /cif/..., kept float32 in int8


class _Cif(nn.Module):
    """The inference CIF as a submodule, so its nodes carry the ``/cif/`` scope."""

    def __init__(self, threshold: float, tail_threshold: float) -> None:
        super().__init__()
        self.threshold, self.tail_threshold = threshold, tail_threshold

    def forward(self, hidden: Tensor, alpha: Tensor, padding: Tensor) -> tuple[Tensor, Tensor]:
        return static_inference_cif(hidden, alpha, padding, self.threshold, self.tail_threshold)


class _TraceableAttention(nn.Module):
    """``nn.MultiheadAttention`` (sequence first, self-attention, eval) with the same weights,
    written so a trace keeps its shapes dynamic (the traced ``F.multi_head_attention_forward``
    freezes the example's length into a Reshape)."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        if not attention._qkv_same_embed_dim or attention.batch_first:
            raise ValueError("only sequence-first self-attention with one input projection is exported")
        self.heads = attention.num_heads
        self.in_proj_weight, self.in_proj_bias = attention.in_proj_weight, attention.in_proj_bias
        self.out_proj = attention.out_proj

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor,
                need_weights: bool = False) -> tuple[Tensor, None]:
        """query (= key = value) (T, B, D), key_padding_mask (B, T) True = padded -> ((T, B, D), None)."""
        projected = F.linear(query.transpose(0, 1), self.in_proj_weight, self.in_proj_bias)  # (B, T, 3D)
        batch, frames = projected.shape[0], projected.shape[1]
        q, k, v = projected.reshape(batch, frames, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, H, T, D/H) each
        attend = ~key_padding_mask.unsqueeze(1).unsqueeze(2)  # (B, 1, 1, T) True = may attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)  # (B, H, T, D/H)
        out = out.transpose(1, 2).reshape(batch, frames, -1)  # (B, T, D)
        return self.out_proj(out).transpose(0, 1), None


def _traceable_encoder(encoder: nn.Module) -> nn.Module:
    """A copy of the CIF encoder whose Conformer attention is :class:`_TraceableAttention`."""
    encoder = copy.deepcopy(encoder)
    for stack in encoder.stacks:
        for layer in stack.conformer_layers:
            layer.self_attn = _TraceableAttention(layer.self_attn)
    return encoder


class AcousticGraph(nn.Module):
    """Waveforms -> CIF vectors: student, featurizer, encoder, weight predictor, CIF.

    Args:
        student: a plain fp32 student (``always_builds_padding_mask`` set).
        layer_weights: (N,) the featurizer's weights of the N hidden states (after softmax).
        normalize: layer-norm each hidden state before the weighted sum (S3PRL's ``normalize``).
        recognizer: the trained recognizer (its encoder and weight predictor are used).
        tail_threshold: the decoding tail threshold.
    """

    def __init__(self, student: nn.Module, layer_weights: Tensor, normalize: bool, recognizer: CifRecognizer,
                 tail_threshold: float) -> None:
        super().__init__()
        self.student = student
        self.register_buffer("layer_weights", layer_weights.detach().float().reshape(-1, 1, 1, 1))
        self.normalize = normalize
        self.rate = int(student.downsample_rate)
        self.encoder = _traceable_encoder(recognizer.encoder)
        self.weight_predictor = recognizer.weight_predictor
        setattr(self, CIF_SCOPE, _Cif(recognizer.model_cfg.cif_threshold, tail_threshold))

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(B, S) float32, (B,) int64 -> cif (B, N, d), cif_lengths (B,), alpha (B, T'), frame_lengths (B,),
        hidden (B, T', d)."""
        stacked = torch.stack(self.student(waveforms, lengths).hidden_states)  # (N, B, T, D)
        if self.normalize:
            stacked = F.layer_norm(stacked, (self.encoder.input_proj.in_features,))  # D, a constant for the trace
        features = (self.layer_weights * stacked).sum(dim=0)  # (B, T, D)
        # S3PRL's Featurizer.tolist: round(samples / rate) frames (half to even), at most T.
        wanted = torch.round(lengths.to(torch.float64) / self.rate).to(torch.int64)
        available = torch.ones_like(wanted).unsqueeze(1).expand(-1, features.shape[1]).sum(dim=1)  # (B,) T each
        feature_lengths = torch.minimum(wanted, available)
        hidden, frame_lengths = self.encoder(features, feature_lengths)
        padding = lengths_to_padding_mask(frame_lengths, hidden.shape[1])
        alpha = self.weight_predictor(hidden, padding)
        cif, cif_lengths = getattr(self, CIF_SCOPE)(hidden, alpha, padding)
        return cif, cif_lengths, alpha, frame_lengths, hidden


class DecoderStepGraph(nn.Module):
    """One :meth:`CifDecoder.step` with the cache as stacked tensors, log-probabilities out."""

    def __init__(self, recognizer: CifRecognizer) -> None:
        super().__init__()
        self.decoder = recognizer.decoder

    def forward(self, prev_token: Tensor, prev_cif: Tensor, cif: Tensor, past_keys: Tensor,
                past_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B,), (B, d), (B, d), (L, B, H, S, d/H) x2 -> (B, V), (L, B, H, S+1, d/H) x2."""
        cache = DecoderCache(list(past_keys.unbind(0)), list(past_values.unbind(0)))
        logits, _, cache = self.decoder.step(prev_token, prev_cif, cif, cache)
        return torch.log_softmax(logits.float(), dim=-1), torch.stack(cache.keys), torch.stack(cache.values)


def check_recognizer_output(folder: str) -> bool:
    """True when ``folder`` holds an earlier export of ours (replaceable), False when it is missing
    or empty; :class:`OutputError` naming what is there for anything else."""
    names = check_output_folder(folder)
    if not names:
        return False
    if not is_our_folder(folder):
        raise OutputError(f"{plain(folder)}: not empty and not an exported recognizer (no {METADATA_FILE} of "
                          f"format {FORMAT_NAME!r}); refusing to write into it: choose a new or empty folder")
    foreign = [name for name in names if name not in OWN_FILES]
    if foreign:
        raise OutputError(f"{plain(folder)}: holds files an export does not write ({', '.join(map(plain, foreign[:5]))}"
                          f"); refusing to replace it: move them out or choose another folder")
    return True


def _example_waveforms(receptive_field: int, seconds: float) -> tuple[Tensor, Tensor]:
    """A padded batch of two (the second 3/4 long), so batch and padding are traced generally."""
    samples = max(int(seconds * SAMPLE_RATE), 4 * receptive_field)
    waveforms = torch.randn(2, samples, generator=torch.Generator().manual_seed(0)) * 0.1
    lengths = torch.tensor([samples, samples * 3 // 4])
    waveforms[1, lengths[1]:] = 0.0
    return waveforms, lengths


def _decoder_example(recognizer: CifRecognizer, steps: int = 3) -> tuple[Tensor, ...]:
    decoder, batch = recognizer.decoder, 2
    heads = recognizer.model_cfg.decoder_heads
    shape = (len(decoder.layers), batch, heads, steps, decoder.dim // heads)
    return (torch.tensor([recognizer.bos, recognizer.eos]), torch.randn(batch, decoder.dim),
            torch.randn(batch, decoder.dim), torch.randn(shape), torch.randn(shape))


_DYNAMIC = {
    ACOUSTIC_FILE: {"waveforms": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
                    "cif": {0: "batch", 1: "rows"}, "cif_lengths": {0: "batch"}, "alpha": {0: "batch", 1: "frames"},
                    "frame_lengths": {0: "batch"}, "hidden": {0: "batch", 1: "frames"}},
    DECODER_FILE: {"prev_token": {0: "batch"}, "prev_cif": {0: "batch"}, "cif": {0: "batch"},
                   "past_keys": {1: "batch", 3: "steps"}, "past_values": {1: "batch", 3: "steps"},
                   "log_probs": {0: "batch"}, "keys": {1: "batch", 3: "next_steps"},
                   "values": {1: "batch", 3: "next_steps"}},
}


def _trace(module: nn.Module, example: tuple[Tensor, ...], name: str, path: str, opset: int) -> None:
    inputs, outputs = GRAPHS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's shape-to-int warnings; the parity tests prove the graph
        with torch.no_grad(), cummin_as_scan(opset):
            torch.onnx.export(module, example, path, dynamo=False, input_names=list(inputs),
                              output_names=list(outputs), dynamic_axes=_DYNAMIC[name], opset_version=opset,
                              do_constant_folding=True)


def _cif_nodes(path: str) -> list[str]:
    """Names of the nodes of the CIF submodule (left in float32 by the int8 quantization)."""
    import onnx

    return [node.name for node in onnx.load(path).graph.node if node.name.startswith(f"/{CIF_SCOPE}/")]


def _write_graph(module: nn.Module, example: tuple[Tensor, ...], name: str, folder: str, dtype: str,
                 opset: int) -> None:
    target = os.path.join(folder, name)
    if dtype == "fp32":
        _trace(module, example, name, target, opset)
        return
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        fp32_path = os.path.join(scratch, name)
        _trace(module, example, name, fp32_path, opset)
        _quantize_int8(fp32_path, target, exclude=_cif_nodes(fp32_path))


def _metadata(recognizer: CifRecognizer, vocab: UnitVocabulary, student: nn.Module, family: str, dtype: str,
              beam_size: int, max_steps: int, tail_threshold: float) -> dict[str, Any]:
    from recycle_distill.util.version import VERSION

    cfg = recognizer.model_cfg
    return {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "dtype": dtype, "upstream": family,
        "language": vocab.language, "package_version": VERSION, "sample_rate": SAMPLE_RATE,
        "receptive_field": int(student.receptive_field),
        "frame_rate": int(recognizer.encoder.output_rate), "d_model": cfg.d_model,
        "decoder_layers": cfg.decoder_layers, "decoder_heads": cfg.decoder_heads, "vocab_size": len(vocab),
        "bos": recognizer.bos, "eos": recognizer.eos,
        "banned": sorted({recognizer.blank, recognizer.pad, recognizer.bos}),
        "beam_size": int(beam_size), "max_steps": int(max_steps), "threshold": float(cfg.cif_threshold),
        "tail_threshold": float(tail_threshold),
    }


def export_recognizer_onnx(
    folder: str,
    *,
    student: nn.Module,
    family: str,
    layer_weights: Sequence[float] | Tensor,
    recognizer: CifRecognizer,
    vocab: UnitVocabulary,
    normalize: bool = False,
    beam_size: int = 10,
    max_steps: int = 1000,
    tail_threshold: float = 0.4,
    dtype: str = "fp32",
    opset: Optional[int] = None,
    example_seconds: float = 2.0,
) -> dict[str, Any]:
    """Write the recognizer folder (see :mod:`.onnx_format`), atomically.

    Args:
        folder: the output folder: new, empty, or an earlier export (replaced; anything else is
            refused with :class:`~recycle_distill.util.atomic.OutputError` before tracing).
        student: the upstream, one of our students (any precision; exported as plain fp32).
        family: its family.
        layer_weights: (N,) the featurizer's weights of the student's N hidden states, after the
            softmax (one-hot for a single layer).
        recognizer: the trained :class:`CifRecognizer` (not modified; exported in eval mode).
        vocab: its unit vocabulary (its size must be the decoder's output size).
        normalize: the featurizer's layer norm.
        beam_size, max_steps, tail_threshold: the decoding settings the runner uses by default.
        dtype: ``fp32`` or ``int8``.
        opset: ONNX opset (default that of the students' export).
        example_seconds: length of the traced example (any length runs afterwards).

    Returns:
        ``folder``, ``dtype``, ``opset``, ``seconds``, ``bytes`` (both graphs) and ``metadata``.
    """
    dtype = check_onnx_dtype(dtype)
    require_onnx(dtype)
    check_recognizer_output(folder)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    vocab_size = recognizer.decoder.vocab_proj.out_features
    if vocab_size != len(vocab):
        raise ValueError(f"the recognizer's decoder has {vocab_size} outputs but the vocabulary {len(vocab)} units")
    started = time.perf_counter()
    plain_student = _plain_fp32_copy(student, family)
    weights = torch.as_tensor(layer_weights, dtype=torch.float32)
    if weights.dim() != 1 or not torch.isfinite(weights).all():
        raise ValueError(f"layer_weights: expected N finite numbers, got a tensor of shape {tuple(weights.shape)}")
    was_training = recognizer.training
    recognizer.eval()
    try:
        acoustic = AcousticGraph(plain_student, weights, normalize, recognizer, tail_threshold).eval()
        step = DecoderStepGraph(recognizer).eval()
        metadata = _metadata(recognizer, vocab, plain_student, family, dtype, beam_size, max_steps, tail_threshold)

        def write(temp: str) -> None:
            _write_graph(acoustic, _example_waveforms(plain_student.receptive_field, example_seconds),
                         ACOUSTIC_FILE, temp, dtype, opset)
            _write_graph(step, _decoder_example(recognizer), DECODER_FILE, temp, dtype, opset)
            vocab.save(os.path.join(temp, VOCAB_FILE))
            with open(os.path.join(temp, METADATA_FILE), "w", encoding="utf-8") as handle:
                json.dump(metadata, handle, indent=1)

        atomic_write_folder(folder, write)
    finally:
        recognizer.train(was_training)
    seconds = time.perf_counter() - started
    size = sum(os.path.getsize(os.path.join(folder, name)) for name in (ACOUSTIC_FILE, DECODER_FILE))
    logger.info("exported the recognizer to %s (%s) in %.1f s", folder, dtype, seconds)
    return {"folder": os.fspath(folder), "dtype": dtype, "opset": opset, "seconds": seconds, "bytes": size,
            "metadata": metadata}


def featurizer_layer_weights(featurizer: nn.Module, num_states: int) -> tuple[Tensor, bool]:
    """(N,) weights S3PRL's ``Featurizer`` gives the upstream's N hidden states, and whether it
    layer-norms them first: the softmax of its weights (weighted sum), or one-hot for a single
    layer (``layer_selection``, ``last_hidden_state``; S3PRL normalizes only a weighted sum)."""
    selection = getattr(featurizer, "feature_selection", "hidden_states")
    layer = getattr(featurizer, "layer_selection", None)
    one_hot = torch.zeros(num_states)
    if selection == "last_hidden_state" or num_states == 1:
        one_hot[-1] = 1.0
        return one_hot, False
    if selection != "hidden_states":
        raise ValueError(f"featurizer selects {plain(selection)}; the ONNX export covers hidden_states and "
                         f"last_hidden_state")
    if isinstance(layer, int):
        if not -num_states <= layer < num_states:
            raise ValueError(f"featurizer layer_selection {layer}: the upstream has {num_states} hidden states")
        one_hot[layer] = 1.0
        return one_hot, False
    weights = featurizer.weights.detach().float().cpu()
    if weights.shape != (num_states,):
        raise ValueError(f"featurizer has {weights.numel()} layer weights; the upstream has {num_states} hidden states")
    return torch.softmax(weights, dim=-1), bool(getattr(featurizer, "normalize", False))


def export_experiment_onnx(experiment: Any, folder: str, dtype: str = "fp32") -> dict[str, Any]:
    """:func:`export_recognizer_onnx` of a rebuilt ``cif_asr`` experiment
    (:func:`recycle_distill.recognizer.experiment.load_experiment`) with its decoding settings.

    Raises:
        ValueError: its upstream is not one of our students (named, with the reason).
    """
    from recycle_distill.s3prl.upstream import StudentUpstream

    upstream = experiment.upstream
    if not isinstance(upstream, StudentUpstream):
        raise ValueError(f"{plain(experiment.checkpoint)}: its upstream ({type(upstream).__name__}) is not a "
                         f"recycle-distill student; the ONNX export traces our students only, whose graphs the "
                         f"students' ONNX tests prove general (transcribe it with PyTorch instead)")
    with torch.no_grad():
        dtype_in = next(upstream.model.parameters()).dtype  # (the upstream may run in bf16)
        probe = torch.zeros(1, 4 * upstream.model.receptive_field, dtype=dtype_in)
        num_states = len(upstream.model(probe).hidden_states)
    weights, normalize = featurizer_layer_weights(experiment.featurizer, num_states)
    decode = experiment.decode
    return export_recognizer_onnx(folder, student=upstream.model, family=upstream.family, layer_weights=weights,
                                  normalize=normalize, recognizer=experiment.model, vocab=experiment.vocab,
                                  beam_size=decode.beam_size, max_steps=decode.max_steps,
                                  tail_threshold=decode.tail_threshold, dtype=dtype)
