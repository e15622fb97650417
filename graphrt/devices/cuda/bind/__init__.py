"""Binders: a program's launch (op, attributes, input and output views, workspace) turned into
kernel calls with every argument resolved, one module per op family (``elementwise``, ``gemm``,
``norm``, ``train``) and the table from op to binder (``registry``). May import ``ops``, the cuda
device's ``calls``, ``sources`` and ``runtime``.
"""
