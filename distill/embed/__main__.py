"""python -m distill.embed ...  ==  distill embed ..."""

import sys

from distill.cli import main

sys.exit(main(["embed", *sys.argv[1:]]))
