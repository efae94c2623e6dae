"""Template of the ``trust_remote_code`` files written next to an ARMHuBERT / FitHuBERT export.

This one file is the source of both generated files (see :mod:`recycle_distill.hf_export.remote_code`):
the part above the ``# ==== modeling ====`` marker becomes ``configuration_<family>.py`` and
the part below it ``modeling_<family>.py``; ``StudentHF`` in class names and the
``"student-hf"`` model type are replaced by the family's names. It needs only ``torch`` and
``transformers`` (never ``recycle_distill``) and keeps our state-dict key names, so an export's
``model.safetensors`` is exactly our student's state dict.

Shapes: ``input_values`` (B, S) 16 kHz waves, ``attention_mask`` (B, S) 1 = real sample.
Outputs: ``last_hidden_state`` (B, T', E); ``hidden_states`` (with ``output_hidden_states``):
the first layer's input then every layer output, (B, T', E) each (T' = T / 2 for FitHuBERT);
``projection_states``: the prediction heads' outputs (B, T, D); ``s3prl_hidden_states``: what
the S3PRL upstream exposes (ARMHuBERT: the heads; FitHuBERT: the layer outputs upsampled
to the CNN frame rate). ``frame_padding_mask``: (B, T) True = padded frame, or None.
"""

from __future__ import annotations

from transformers import PretrainedConfig


class StudentHFConfig(PretrainedConfig):
    """A Recycle-and-Distill student: ``family`` and the ``distiller`` architecture dict."""

    model_type = "student-hf"

    def __init__(self, family: str = "student-hf", distiller: dict | None = None, **kwargs) -> None:
        self.family = family
        self.distiller = dict(distiller or {})
        super().__init__(**kwargs)


# ==== modeling ====
from dataclasses import dataclass  # noqa: E402
from typing import Optional  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from transformers import PreTrainedModel  # noqa: E402
from transformers.utils import ModelOutput  # noqa: E402


@dataclass
class StudentHFOutput(ModelOutput):
    """See the module doc for each field's shape."""

    last_hidden_state: Optional[torch.FloatTensor] = None
    hidden_states: Optional[tuple[torch.FloatTensor, ...]] = None
    projection_states: Optional[tuple[torch.FloatTensor, ...]] = None
    s3prl_hidden_states: Optional[tuple[torch.FloatTensor, ...]] = None
    frame_padding_mask: Optional[torch.BoolTensor] = None


def _conv_lengths(lengths: Tensor, kernel_strides: list) -> Tensor:
    """Frame counts after unpadded convolutions: ``L -> floor((L - k) / s) + 1``, never < 0."""
    for kernel, stride in kernel_strides:
        lengths = (torch.div(lengths - kernel, stride, rounding_mode="floor") + 1).clamp(min=0)
    return lengths


def _padding(lengths: Tensor, size: int) -> Tensor:
    """(B,) lengths -> (B, size) bool, True = padding."""
    return torch.arange(size, device=lengths.device)[None, :] >= lengths[:, None]


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, T, E) -> (B, H, T, E/H)."""
    return x.view(x.shape[0], x.shape[1], num_heads, -1).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """(B, H, T, d) -> (B, T, H*d)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def _softmax(scores: Tensor, padding: Optional[Tensor]) -> Tensor:
    """Float32 softmax over keys (B, H, T, S) with padded keys at -inf."""
    scores = scores.float()
    if padding is not None:
        scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


class Attention(nn.Module):
    """Full multi-head self-attention; returns its probabilities when a later layer reuses them."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.q_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor, padding: Optional[Tensor], probs: Optional[Tensor], keep: bool):
        q, k, v = (_heads(proj(x), self.num_heads) for proj in (self.q_proj, self.k_proj, self.v_proj))
        if not keep:
            mask = None if padding is None else ~padding[:, None, None, :]
            return self.out_proj(_merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))), None
        probs = _softmax(torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2)), padding)
        return self.out_proj(_merge(torch.matmul(probs.to(v.dtype), v))), probs


class StudentHFReusedAttention(nn.Module):
    """ARMHuBERT: values of this layer, the previous full layer's probabilities softmaxed once more."""

    def __init__(self, dim: int, num_heads: int, pair_like_reference: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pair_like_reference = pair_like_reference
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor, padding: Optional[Tensor], probs: Optional[Tensor], keep: bool):
        if probs is None:
            raise ValueError("an attention-reuse layer needs the previous full layer's probabilities")
        if self.pair_like_reference:  # the released training code's (head, batch) order
            batch, heads, time, keys = probs.shape
            probs = probs.transpose(0, 1).reshape(batch, heads, time, keys)
        v = _heads(self.v_proj(x), self.num_heads)
        attended = torch.matmul(_softmax(probs, padding).to(v.dtype), v)
        return self.out_proj(_merge(attended)), (probs if keep else None)


class Layer(nn.Module):
    """Post-LN transformer layer (GELU feed-forward)."""

    def __init__(self, dim: int, ffn: int, num_heads: int, reuse: bool, pair_like_reference: bool) -> None:
        super().__init__()
        self.self_attn = StudentHFReusedAttention(dim, num_heads, pair_like_reference) if reuse else Attention(dim, num_heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, padding: Optional[Tensor], probs: Optional[Tensor], keep: bool):
        attended, probs = self.self_attn(x, padding, probs, keep)
        x = self.self_attn_layer_norm(x + attended)
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x)))), probs


def positional_conv(dim: int, kernel: int, groups: int) -> nn.Conv1d:
    """Weight-normalised grouped conv (norm over dims 0 and 1, as in HuBERT).

    Stored as ``weight_g`` / ``weight_v``; transformers renames those to the parametrization
    names on load when torch has them, as it does for its own HuBERT.
    """
    conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
    weight_norm = getattr(nn.utils.parametrizations, "weight_norm", None) or nn.utils.weight_norm
    return weight_norm(conv, name="weight", dim=2)


class Upsampler(nn.Module):
    """ConvTranspose1d over time, cut or edge-padded to a frame count (FitHuBERT)."""

    def __init__(self, dim: int, factor: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, kernel_size=factor, stride=factor)

    def forward(self, x: Tensor, length: int) -> Tensor:
        y = self.conv(x.transpose(1, 2))
        if y.shape[-1] < length:
            y = F.pad(y, (0, length - y.shape[-1]), mode="replicate")
        return y[:, :, :length].transpose(1, 2)


class Head(nn.Module):
    """Prediction head: [upsampler], then Linear(E, D) unless E == D."""

    def __init__(self, dim: int, out_dim: int, factor: Optional[int]) -> None:
        super().__init__()
        self.upsample = Upsampler(dim, factor) if factor else None
        self.lin_proj = nn.Linear(dim, out_dim) if dim != out_dim else None

    def forward(self, x: Tensor, length: int) -> Tensor:
        if self.upsample is not None:
            x = self.upsample(x, length)
        return self.lin_proj(x) if self.lin_proj is not None else x


class StudentHFTimeReduction(nn.Module):
    def __init__(self, dim: int, kernel: int, factor: int) -> None:
        super().__init__()
        self.kernel, self.factor = kernel, factor
        self.conv = nn.Conv1d(dim, dim, kernel_size=kernel, stride=factor)


class Encoder(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        dim, reuse = cfg["encoder_embed_dim"], cfg.get("reuse_pattern") or [True] * cfg["encoder_layers"]
        self.pos_conv = nn.ModuleDict({"0": positional_conv(dim, cfg["conv_pos"], cfg["conv_pos_groups"])})
        self.layers = nn.ModuleList(
            Layer(dim, cfg["encoder_ffn_embed_dim"], cfg["encoder_attention_heads"], not full,
                  bool(cfg.get("reference_batched_reuse", False)))
            for full in reuse
        )
        self.layer_norm = nn.LayerNorm(dim)
        if cfg.get("enable_tr_layer"):
            self.tr_layer = StudentHFTimeReduction(dim, cfg["tr_conv1d_kernel"], cfg["tr_reduce_factor"])
        self.multiple = int(cfg.get("required_seq_len_multiple", 1))
        self.keeps = [i + 1 < len(reuse) and not reuse[i + 1] for i in range(len(reuse))]

    def forward(self, x: Tensor, padding: Optional[Tensor]):
        """(B, T, E) -> the layer outputs (B, T', E) each, the (B, T') mask, the first layer's input."""
        if padding is not None:
            x = x.masked_fill(padding[..., None], 0.0)
        y = self.pos_conv["0"](x.transpose(1, 2))
        if self.pos_conv["0"].kernel_size[0] % 2 == 0:  # "same" length: drop the extra frame
            y = y[:, :, :-1]
        x = self.layer_norm(x + F.gelu(y).transpose(1, 2))
        if hasattr(self, "tr_layer"):
            x = self.tr_layer.conv(x.transpose(1, 2)).transpose(1, 2)
            if padding is not None:
                kept = _conv_lengths((~padding).sum(1), [(self.tr_layer.kernel, self.tr_layer.factor)])
                padding = _padding(kept, x.shape[1])
        first_input, pad = x, -x.shape[1] % self.multiple
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
            base = padding if padding is not None else torch.zeros(x.shape[0], x.shape[1] - pad, dtype=torch.bool,
                                                                    device=x.device)
            padding = F.pad(base, (0, pad), value=True)
        outputs, probs = [], None
        for layer, keep in zip(self.layers, self.keeps):
            x, probs = layer(x, padding, probs, keep)
            outputs.append(x[:, : x.shape[1] - pad])
        if pad and padding is not None:
            padding = padding[:, : padding.shape[1] - pad]
        return outputs, padding, first_input


class StudentHFPreTrainedModel(PreTrainedModel):
    config_class = StudentHFConfig
    base_model_prefix = "student"
    main_input_name = "input_values"

    def _init_weights(self, module: nn.Module) -> None:
        """Exports carry every weight; a fresh model keeps PyTorch's default initialisation."""


class StudentHFModel(StudentHFPreTrainedModel):
    """The student, key for key: CNN -> LayerNorm -> [proj] -> encoder -> heads."""

    def __init__(self, config: StudentHFConfig) -> None:
        super().__init__(config)
        cfg = config.distiller
        dim, cnn = cfg["encoder_embed_dim"], [tuple(layer) for layer in cfg["conv_feature_layers"]]
        self.mask_emb = nn.Parameter(torch.zeros(dim))
        blocks, channels = [], 1
        for index, (out, kernel, stride) in enumerate(cnn):
            parts = [nn.Conv1d(channels, out, kernel, stride=stride, bias=bool(cfg.get("conv_bias", False))),
                     nn.Dropout(0.0)]
            parts += [nn.GroupNorm(out, out)] if index == 0 else []
            blocks.append(nn.Sequential(*parts, nn.GELU()))
            channels = out
        self.feature_extractor = nn.Module()
        self.feature_extractor.conv_layers = nn.ModuleList(blocks)
        self.kernel_strides = [(kernel, stride) for _, kernel, stride in cnn]
        self.layer_norm = nn.LayerNorm(channels)
        self.post_extract_proj = nn.Linear(channels, dim) if channels != dim else None
        self.encoder = Encoder(cfg)
        time_reduced = bool(cfg.get("enable_tr_layer"))
        self.head_layers = list(cfg["pred_layer_id"]) if time_reduced else list(range(cfg["encoder_layers"]))
        factor = cfg["tr_reduce_factor"] if time_reduced else None
        self.proj_head = nn.ModuleList(Head(dim, cfg["pred_head_final_dim"], factor) for _ in self.head_layers)
        if time_reduced:
            self.upsampler = Upsampler(dim, cfg["tr_reduce_factor"])
        self.crop = int(cfg.get("crop_seq_to_multiple", 1))
        self.post_init()

    def forward(self, input_values: Tensor, attention_mask: Optional[Tensor] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None, **kwargs):
        x = input_values[:, None, :]
        for block in self.feature_extractor.conv_layers:
            x = block(x)
        features = self.layer_norm(x.transpose(1, 2))
        padding = None
        if attention_mask is not None:
            padding = _padding(_conv_lengths(attention_mask.sum(-1).long(), self.kernel_strides), features.shape[1])
            padding = padding if bool(padding.any()) else None
        crop = features.shape[1] % self.crop
        if crop:
            features = features[:, :-crop]
            padding = padding[:, :-crop] if padding is not None else None
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        layers, _, first_input = self.encoder(features, padding)
        frames = features.shape[1]
        heads = tuple(head(layers[index], frames) for head, index in zip(self.proj_head, self.head_layers))
        if hasattr(self, "upsampler"):
            s3prl = tuple(self.upsampler(layer, frames) for layer in layers)
        else:
            s3prl = heads
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        hidden = (first_input, *layers) if output_hidden_states else None
        output = StudentHFOutput(last_hidden_state=layers[-1], hidden_states=hidden, projection_states=heads,
                                 s3prl_hidden_states=s3prl, frame_padding_mask=padding)
        return output if return_dict is not False else output.to_tuple()
