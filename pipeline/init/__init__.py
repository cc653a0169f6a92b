"""Day-one configuration (issue 38): fingerprint a dataset, derive a plan from rules, size it to a
time budget with a timed probe on this machine, and write the experiment YAML."""
