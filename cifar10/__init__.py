"""CIFAR-10 models (with a registry), data and, later, training, as in the original tool."""
