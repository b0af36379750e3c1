"""8x8 digits end to end: train the tiny UNet, sample with ancestral / DDIM / DPM-Solver++, FD/KID and bits/dim.

    python examples/digits.py                       # ~6-11 minutes on one CPU core
    python examples/digits.py --steps 6000 --num 1797 --solvers ancestral:1000,ddim:100,dpm-solver++:20

See examples/end_to_end.py for every flag; results in runs/example-digits/ (results.md, grid_*.png).
"""

from end_to_end import main

if __name__ == "__main__":
    main("digits")
