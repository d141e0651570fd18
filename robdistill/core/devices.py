"""The peak arithmetic throughput of known accelerators (dense, no sparsity; vendors' data sheets),
so that a run can say what fraction of its device it used. CPUs vary too much to tabulate: their
peak is unknown (None), and only the achieved rate is reported."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# device name as torch.cuda.get_device_name reports it (prefix match) -> precision -> FLOP/s
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "NVIDIA H200": {"fp32": 67e12, "bf16": 989e12},          # H200 SXM data sheet: same SMs as H100 SXM
    "NVIDIA H100 80GB HBM3": {"fp32": 67e12, "bf16": 989e12},  # H100 SXM5
    "NVIDIA H100 PCIe": {"fp32": 51e12, "bf16": 756e12},
    "NVIDIA A100": {"fp32": 19.5e12, "bf16": 312e12},          # A100 SXM4 / PCIe (TF32 off for fp32)
    "NVIDIA L4": {"fp32": 30.3e12, "bf16": 121e12},
}


def device_name(device: str | torch.device) -> str:
    """The accelerator's name (``torch.cuda.get_device_name``), or ``cpu``."""
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def peak_flops(device: str | torch.device, precision: str = "fp32") -> float | None:
    """The device's dense peak FLOP/s in ``precision`` (``fp32``; ``bf16`` for bf16 autocast), or
    None where unknown (every CPU)."""
    name = device_name(device)
    for prefix, peaks in PEAK_FLOPS.items():
        if name.startswith(prefix):
            return peaks.get("bf16" if precision == "bf16" else "fp32")
    return None
