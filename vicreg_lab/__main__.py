"""``python -m vicreg_lab ...`` (and ``torchrun -m vicreg_lab ...``): the ``vicreg-lab`` command."""

from vicreg_lab.lab.cli import main

raise SystemExit(main())
