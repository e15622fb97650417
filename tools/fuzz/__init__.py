"""Parser fuzzing: mutators of real model files (``mutators``, ``binary``) and the driver that checks
every input loads or raises a GraphrtError within time and memory bounds (``driver``)."""
