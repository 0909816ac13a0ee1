"""Devices: a MirroredStrategy when several GPUs are visible (or logical CPUs are asked for, to test
the multi-device path without GPUs), else TensorFlow's default strategy.
"""

from __future__ import annotations

import os


#: Testing aid: ``LOUPE_MIRRORED_CPUS=N`` (N >= 2) splits the CPU into N logical devices and
#: trains under a MirroredStrategy over them, so the multi-device path runs without GPUs.
MIRRORED_CPUS_ENV = "LOUPE_MIRRORED_CPUS"


def _mirrored_cpus() -> int:
    try:
        n = int(os.environ.get(MIRRORED_CPUS_ENV, "0") or 0)
    except ValueError:
        raise ValueError(f"{MIRRORED_CPUS_ENV} must be an integer; received {os.environ[MIRRORED_CPUS_ENV]!r}") from None
    return n if n >= 2 else 0


def configure_devices() -> None:
    """Before TensorFlow runs anything: the logical CPU devices :data:`MIRRORED_CPUS_ENV` asks for."""
    n = _mirrored_cpus()
    if not n:
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or ()) != n:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])


def distribution_strategy():
    """MirroredStrategy when several GPUs are visible (or :data:`MIRRORED_CPUS_ENV` asks for logical CPUs),
    else the default strategy."""
    import tensorflow as tf

    n = _mirrored_cpus()
    if n:
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
