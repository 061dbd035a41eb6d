"""``python -m cnnlab`` runs the command line (also what ``torchrun -m cnnlab`` starts)."""

import sys

from cnnlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
