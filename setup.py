"""Build the compiled kernels of hybnn.engine (everything else is in pyproject.toml).

One C extension, no numpy or torch headers: SIMD paths are chosen per function with
``__attribute__((target(...)))`` and picked at run time, so the build uses no -march flag.
"""

import sys

from setuptools import Extension, setup

CSRC = "src/hybnn/engine/csrc"
SOURCES = [
    f"{CSRC}/{name}.c"
    for name in (
        "module",
        "network",
        "dispatch",
        "threads",
        "float_ops",
        "kernels_scalar",
        "kernels_avx2",
        "kernels_avx512",
        "kernels_neon",
    )
]

if sys.platform == "win32":
    compile_args: list[str] = ["/O2"]
    libraries: list[str] = []
else:
    # -ffp-contract=off: the float output layer rounds exactly where the C source says.
    compile_args = [
        "-O3",
        "-std=gnu11",
        "-ffp-contract=off",
        "-fno-strict-aliasing",
        "-Wall",
        "-Wno-unknown-pragmas",
    ]
    libraries = ["pthread", "m"]

setup(
    ext_modules=[
        Extension(
            "hybnn.engine._kernels",
            sources=SOURCES,
            depends=[f"{CSRC}/engine.h", f"{CSRC}/network.h"],
            extra_compile_args=compile_args,
            libraries=libraries,
        )
    ]
)
