"""int8 post-training quantization of the backbone, for CPUs with VNNI int8 dot-product units.
Weights per output channel, activations calibrated on real photos; the head stays fp32.
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

CALIBRATION_BATCH = 8


def quantize(model: nn.Module, head_path: str, photos: torch.Tensor, vnni: bool,
             fp32_layers: tuple[str, ...] = (),
             alone: Callable[[], AbstractContextManager] = nullcontext
             ) -> tuple[nn.Module, torch.Tensor]:
    """An int8 model built from `model` (left as it is), with activation ranges taken from
    `photos` (N, 3, H, W), and the fp32 outputs for `photos` computed on the way.

    oneDNN's int8 kernels use the full 8-bit activation range on VNNI; without VNNI, fbgemm's
    reduced 7-bit range avoids the int16 overflow of older AVX2/AVX-512 instructions.
    `fp32_layers` (module names) stay in fp32: the mixed-precision model. FX traces by
    patching torch.nn.Module for the whole process, so tracing and converting run inside
    `alone()`: where no other thread forwards a model (the server's CPU gate)."""
    import torch.fx.config
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = "onednn" if vnni else "x86"
    torch.backends.quantized.engine = engine
    mapping = get_default_qconfig_mapping(engine).set_global(_qconfig(vnni))
    mapping.set_module_name(head_path, None)  # the head is tiny; fp32 keeps its output exact
    for name in fp32_layers:
        mapping.set_module_name(name, None)
    # FX records a stack trace per node by default, which imports torch._inductor (+3 s)
    stack_traces = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notices, once per call
            with alone():
                observed = prepare_fx(model.eval(), mapping, (photos[:1],))  # `model` as is
            with torch.no_grad():
                outputs = torch.cat([observed(chunk)
                                     for chunk in photos.split(CALIBRATION_BATCH)])
            with alone():
                return convert_fx(observed), outputs
    finally:
        torch.fx.config.do_not_emit_stack_traces = stack_traces
        _forget_fx_modules()


def _forget_fx_modules() -> None:
    """Empty torch.ao FX's cache of every module it has looked up a device for (an unbounded
    functools.cache keyed by the module): it keeps each observed and int8 model alive, and a
    check that tried int8 and mixed int8 held 185 MiB more after serving another model."""
    from torch.ao.quantization.fx import utils

    cached = getattr(utils.assert_and_get_unique_device, "cache_clear", None)
    if cached is not None:  # a torch without the cache has nothing to clear
        cached()


def _qconfig(vnni: bool):
    """Per-channel symmetric int8 weights; activation ranges from their min/max (7-bit
    without VNNI)."""
    from torch.ao.quantization import QConfig
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    return QConfig(
        activation=MinMaxObserver.with_args(reduce_range=not vnni),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                  qscheme=torch.per_channel_symmetric))


def _fake_int8(x: torch.Tensor, observer) -> torch.Tensor:
    """x through an int8 round trip with the qparams `observer` (quantize()'s) gives it."""
    watch = observer()
    watch(x.detach())
    scale, zero = watch.calculate_qparams()
    if watch.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine):
        return torch.fake_quantize_per_channel_affine(
            x, scale, zero.int(), watch.ch_axis, watch.quant_min, watch.quant_max)
    return torch.fake_quantize_per_tensor_affine(
        x, float(scale), int(zero), watch.quant_min, watch.quant_max)


def layer_sensitivity(model: nn.Module, head_path: str, photos: torch.Tensor,
                      vnni: bool, thread: int | None = None) -> list[tuple[str, float]]:
    """Each Conv2d and Linear outside the head, with the relative error that int8 inputs and
    weights add to its own output on `photos` (one fp32 pass, each layer fed its fp32 input),
    the most sensitive first. With `thread` (an ident), only that thread's forwards are
    measured: the server's lanes may be forwarding the same model meanwhile."""
    qconfig = _qconfig(vnni)
    errors: dict[str, float] = {}

    def hook(name: str):
        def measure(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if thread is not None and threading.get_ident() != thread:
                return
            x = _fake_int8(args[0], qconfig.activation)
            w = _fake_int8(module.weight, qconfig.weight)
            if isinstance(module, nn.Conv2d):
                approx = module._conv_forward(x, w, module.bias)
            else:
                approx = nn.functional.linear(x, w, module.bias)
            error = float((approx - output).norm() / output.norm().clamp(min=1e-12))
            errors[name] = max(errors.get(name, 0.0), error)
        return measure

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if isinstance(module, (nn.Conv2d, nn.Linear))
               and not (name == head_path or name.startswith(head_path + "."))]
    try:
        with torch.no_grad():
            model.eval()(photos[:CALIBRATION_BATCH])
    finally:
        for handle in handles:
            handle.remove()
    return sorted(errors.items(), key=lambda item: -item[1])
