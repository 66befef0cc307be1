"""``python -m gal task=diabetes gal=on``: the trainer's entry point (also ``gal-train``, torchrun ``-m gal``).

The task function is imported from gal.cli, so launchers that pickle it (hydra-submitit-launcher)
find it by reference.
"""

from gal.cli import main

if __name__ == "__main__":
    main()
