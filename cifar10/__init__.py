"""CIFAR-10 models (with a registry), data and training (train.py; the command main.py), as in the original tool."""
