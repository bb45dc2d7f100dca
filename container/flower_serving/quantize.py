# int8 post-training quantization of the backbone, for CPUs with VNNI int8 dot-product units.
# Weights per output channel, activations calibrated on real photos; the head stays fp32.
from __future__ import annotations

import warnings

import torch
from torch import nn

CALIBRATION_BATCH = 8


def quantize(model: nn.Module, head_path: str, photos: torch.Tensor,
             vnni: bool) -> tuple[nn.Module, torch.Tensor]:
    """An int8 model built from `model` (left as it is), with activation ranges taken from
    `photos` (N, 3, H, W), and the fp32 outputs for `photos` computed on the way.

    oneDNN's int8 kernels use the full 8-bit activation range on VNNI; without VNNI, fbgemm's
    reduced 7-bit range avoids the int16 overflow of older AVX2/AVX-512 instructions."""
    import torch.fx.config
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = "onednn" if vnni else "x86"
    torch.backends.quantized.engine = engine
    qconfig = QConfig(
        activation=MinMaxObserver.with_args(reduce_range=not vnni),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                  qscheme=torch.per_channel_symmetric))
    mapping = get_default_qconfig_mapping(engine).set_global(qconfig)
    mapping.set_module_name(head_path, None)  # the head is tiny; fp32 keeps its output exact
    # FX records a stack trace per node by default, which imports torch._inductor (+3 s)
    stack_traces = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notices, once per call
            observed = prepare_fx(model.eval(), mapping, (photos[:1],))  # leaves `model` as is
            with torch.no_grad():
                outputs = torch.cat([observed(chunk)
                                     for chunk in photos.split(CALIBRATION_BATCH)])
            return convert_fx(observed), outputs
    finally:
        torch.fx.config.do_not_emit_stack_traces = stack_traces
