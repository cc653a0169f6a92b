"""The ground floor: errors, paths, crash-safe file io, folder swaps, locks, logging, device and
precision, torchrun, and the memmapped array store. Imports nothing else of the package."""
