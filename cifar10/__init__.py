"""The original tool's ``cifar10/`` folder: the model zoo (`cifar10.models`, re-exported from
`loss_landscape.models.cifar10`) and the training command (``python cifar10/main.py``, the same as
``loss-landscape train``). The CIFAR-10 reader is `loss_landscape.cifar10_data`, the training loop
`loss_landscape.training`."""
