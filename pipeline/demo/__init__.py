"""The synthetic demo datasets that a fresh clone trains on (binary and K-class), and their
command."""
