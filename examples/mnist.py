"""The 5,000-image MNIST subset (28x28) end to end: train, sample with several solvers, FD/KID and bits/dim.

    python examples/mnist.py                        # narrow UNet, 1,000 steps: ~20-25 minutes on one CPU core
    python examples/mnist.py --unet-size small --steps 20000 --batch-size 128 --device cuda

See examples/end_to_end.py for every flag; results in runs/example-mnist/ (results.md, grid_*.png).
"""

from end_to_end import main

if __name__ == "__main__":
    main("mnist")
