"""Energy measurement: the meter protocol, Zeus underneath, idle baselines, validity checks."""
