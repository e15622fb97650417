"""Test and benchmark machinery that does not ship with graphrt: parser fuzzing (``fuzz``) and the
CUDA stand-in that runs the cuda device's kernels on the CPU (``cuda_emulator``). Imported by
``tests/`` and ``bench/`` from the repository root; may import anything of graphrt.
"""
