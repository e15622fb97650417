"""The cuda device's runtime: CuPy's view of the GPU (``cupy_backend``, put together from
``streams``, ``memory``, ``launch``, ``gemm`` and ``graphs``) and the CUDA runtime's own answers
(``driver``: device properties, error texts). CuPy is imported when a backend is made. May import
``ir`` and the cuda device's ``calls`` and ``sources``.
"""
