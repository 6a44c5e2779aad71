"""python -m distill.eval ...  ==  distill eval ..."""

import sys

from distill.cli import main

sys.exit(main(["eval", *sys.argv[1:]]))
