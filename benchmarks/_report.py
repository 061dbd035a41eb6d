"""Write one benchmark's results into its own section of BENCHMARKS.md.

Each benchmark script owns the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` and
replaces only that, so scripts can be re-run independently without clobbering each other's figures.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def _cpuinfo() -> tuple[str, set[str]]:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return cpu, flags


def cpu_isa() -> str:
    """The vector extensions that decide which kernels are fast here (they differ per machine)."""
    _, flags = _cpuinfo()
    named = [
        ("avx512f", "AVX-512"),
        ("avx512_vnni", "VNNI"),
        ("avx512_bf16", "AVX512-BF16"),
        ("amx_bf16", "AMX"),
    ]
    have = [label for flag, label in named if flag in flags]
    if have:
        return "+".join(have)
    return "AVX2" if "avx2" in flags else "no AVX2"


def load_average() -> str:
    """The 1-minute load average now: how shared the CPU was while measuring."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "n/a"


def machine_line() -> str:
    """One line describing where the figures were measured (CPU, ISA, threads, load)."""
    cpu, _ = _cpuinfo()
    return (
        f"{cpu} ({cpu_isa()}); {os.cpu_count()} cores; torch {torch.__version__}; "
        f"{torch.get_num_threads()} threads; CUDA {'yes' if torch.cuda.is_available() else 'no'}; "
        f"load average {load_average()} when written"
    )


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md with ``markdown``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
